"""Ready configurations of the paper's experiments.

    keras_svre.presets.names()            # the preset names
    keras_svre.presets.get("cifar10-svre-ws")
    gan, data, history = keras_svre.presets.train("cifar10-svre-ws", epochs=2, take=512)

Each preset is a `keras_svre.run.RunConfig`; `keras-svre train --preset
NAME` runs one from the command line. Settings follow the paper and its
poster (METHOD.md): SAGAN-style networks
with the hinge loss on CIFAR-10 and SVHN, batch 64; SVRE with plain steps
(generator 1e-2, discriminator 4e-2 on CIFAR-10; 1e-3 / 4e-3 on SVHN); Adam
baselines with generator 1e-4, discriminator 4e-4, beta_1 = 0, beta_2 = 0.9;
warm start (SVRE-GAN-WS) with SE-A at 2e-3 for both players, then SVRE; EMA
0.9999. `epochs` defaults are the lengths to reproduce the paper on a GPU;
pass fewer for a trial.
"""

from __future__ import annotations

from keras_svre import run
from keras_svre.run import RunConfig

_COMMON = {"beta_1": 0.0, "beta_2": 0.9, "batch_size": 64, "epochs": 100}
_COMMON.update({"warm_start_method": None, "warm_start_lr": 2e-3, "ema_decay": 0.9999})
_SAGAN = {"architecture": "dcgan32_sa", "width": 64, "loss": "hinge"}
_ADAM = {"method": "adam", "generator_lr": 1e-4, "discriminator_lr": 4e-4}
_SVRE_CIFAR = {"method": "svre", "generator_lr": 1e-2, "discriminator_lr": 4e-2}
_SVRE_SVHN = {"method": "svre", "generator_lr": 1e-3, "discriminator_lr": 4e-3}
_WARM = {"warm_start_method": "se-a", "warm_start_epochs": 10}
_MNIST = {
    "dataset": "mnist",
    "architecture": "mnist_dcgan",
    "width": 64,
    "loss": "non_saturating",
    "batch_size": 50,
    "epochs": 20,
    "ema_decay": 0.999,
}
_IMAGENET32 = {
    "dataset": "downsampled_imagenet/32x32",
    "architecture": "resnet32",
    "width": 128,
    "loss": "hinge",
    **_SVRE_CIFAR,
    "image_size": 32,
    "epochs": 20,
}


def _preset(*groups, **settings) -> RunConfig:
    """A preset: the common settings, then each group of settings, then the rest."""
    merged = dict(_COMMON)
    for group in groups:
        merged.update(group)
    return RunConfig(**{**merged, **settings})


PRESETS = {
    "mnist-svre": _preset(
        _MNIST, method="svre", generator_lr=1e-2, discriminator_lr=1e-2
    ),
    "mnist-svre-vrad": _preset(
        _MNIST,
        method="svre-vrad",
        generator_lr=1e-3,
        discriminator_lr=1e-3,
        beta_1=0.5,
        beta_2=0.999,
    ),
    "cifar10-adam": _preset(dataset="cifar10", **_SAGAN, **_ADAM),
    "cifar10-se-a": _preset(dataset="cifar10", **_SAGAN, **{**_ADAM, "method": "se-a"}),
    "cifar10-svre": _preset(dataset="cifar10", **_SAGAN, **_SVRE_CIFAR, lr_decay=0.99),
    "cifar10-svre-ws": _preset(
        dataset="cifar10", **_SAGAN, **_SVRE_CIFAR, **_WARM, lr_decay=0.99
    ),
    "svhn-adam": _preset(dataset="svhn_cropped", **_SAGAN, **_ADAM),
    "svhn-svre": _preset(dataset="svhn_cropped", **_SAGAN, **_SVRE_SVHN),
    "svhn-svre-ws": _preset(dataset="svhn_cropped", **_SAGAN, **_SVRE_SVHN, **_WARM),
    "imagenet32-svre": _preset(_IMAGENET32),
    "imagenet32-svre-ws": _preset(
        _IMAGENET32, warm_start_method="se-a", warm_start_epochs=2
    ),
}

#: One line per preset, for `keras-svre presets`.
DESCRIPTIONS = {
    "mnist-svre": "MNIST, DCGAN width 64, SVRE 1e-2 (the paper's MNIST setting)",
    "mnist-svre-vrad": "MNIST, DCGAN width 64, SVRE-VRAd 1e-3, beta_1 0.5",
    "cifar10-adam": "CIFAR-10, SAGAN-style nets, hinge loss, SGDA-Adam 1e-4/4e-4",
    "cifar10-se-a": "CIFAR-10, SAGAN-style nets, hinge loss, SE-A 1e-4/4e-4",
    "cifar10-svre": "CIFAR-10, SAGAN-style nets, hinge loss, SVRE 1e-2/4e-2, decay 0.99",
    "cifar10-svre-ws": "CIFAR-10, as cifar10-svre after 10 epochs of SE-A 2e-3",
    "svhn-adam": "SVHN, SAGAN-style nets, hinge loss, SGDA-Adam 1e-4/4e-4",
    "svhn-svre": "SVHN, SAGAN-style nets, hinge loss, SVRE 1e-3/4e-3",
    "svhn-svre-ws": "SVHN, as svhn-svre after 10 epochs of SE-A 2e-3",
    "imagenet32-svre": "ImageNet 32x32, ResNet width 128, hinge loss, SVRE 1e-2/4e-2",
    "imagenet32-svre-ws": "ImageNet 32x32, as imagenet32-svre after 2 epochs of SE-A",
}


def names() -> list[str]:
    """The preset names."""
    return sorted(PRESETS)


def get(name: str) -> RunConfig:
    """A preset by name; `ValueError` listing the names otherwise."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Choose one of: {', '.join(names())}."
        )
    return PRESETS[name]


def train(
    name_or_preset,
    *,
    epochs: int | None = None,
    warm_start_epochs: int | None = None,
    width: int | None = None,
    batch_size: int | None = None,
    take: int | None = None,
    steps_per_epoch: int | None = None,
    data_dir=None,
    seed: int = 0,
    callbacks=None,
    jit_compile="auto",
    verbose="auto",
):
    """Builds the preset's data, networks and optimizers, and trains (`run.train`).

    Args:
        name_or_preset: A preset name or a `RunConfig`.
        epochs: Overrides the preset's length.
        warm_start_epochs: Overrides the preset's warm start length.
        width: Overrides the networks' width (small for trials).
        batch_size: Overrides the minibatch size (and caps the snapshot
            pass's batch size).
        take: Use only the first N examples (trials).
        steps_per_epoch: At most this many iterations per epoch (trials).
        data_dir: TFDS data folder.
        seed: Seed of the data order, the networks and the noise bank.
        callbacks: Keras callbacks.
        jit_compile: Passed to `compile`.
        verbose: Passed to `fit`.

    Returns:
        `(gan, data, history)`.
    """
    config = get(name_or_preset) if isinstance(name_or_preset, str) else name_or_preset
    changes = {
        "epochs": epochs,
        "warm_start_epochs": warm_start_epochs,
        "width": width,
        "take": take,
        "steps_per_epoch": steps_per_epoch,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if batch_size:
        changes["batch_size"] = batch_size
        changes["snapshot_batch_size"] = max(batch_size, config.snapshot_batch_size)
    config = config.replace(seed=seed, **changes)
    gan, data, _, history = run.train(
        config,
        data_dir=data_dir,
        callbacks=callbacks,
        verbose=verbose,
        jit_compile=jit_compile,
    )
    return gan, data, history
