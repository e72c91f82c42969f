"""Ready configurations of the paper's experiments.

    keras_svre.presets.names()            # the preset names
    keras_svre.presets.get("cifar10-svre-ws")
    gan, history = keras_svre.presets.train("cifar10-svre-ws", epochs=2, take=512)

Settings follow the paper and its poster (METHOD.md): SAGAN-style networks
with the hinge loss on CIFAR-10 and SVHN, batch 64; SVRE with plain steps
(generator 1e-2, discriminator 4e-2 on CIFAR-10; 1e-3 / 4e-3 on SVHN); Adam
baselines with generator 1e-4, discriminator 4e-4, beta_1 = 0, beta_2 = 0.9;
warm start (SVRE-GAN-WS) with SE-A at 2e-3 for both players, then SVRE; EMA
0.9999. `epochs` defaults are the lengths to reproduce the paper on a GPU;
pass fewer for a trial.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_svre import data as data_lib
from keras_svre import models, optimizers
from keras_svre.gan import GAN
from keras_svre.training import epoch_decay, fit_with_warm_start


@dataclasses.dataclass(frozen=True)
class Preset:
    """One experiment's configuration.

    Attributes:
        dataset: TFDS name.
        architecture: `keras_svre.models` name.
        width: Channel multiplier of the networks.
        loss: GAN loss name.
        method: Method after the warm start (`keras_svre.optimizers.METHODS`).
        generator_lr: The generator's step size.
        discriminator_lr: The discriminator's step size.
        beta_1: Adam's beta_1 (Adam-based methods).
        beta_2: Adam's beta_2.
        batch_size: Minibatch size.
        snapshot_batch_size: Batch size of SVRE's snapshot pass.
        epochs: Training length (epochs), warm start included.
        warm_start_method: Method of the warm start, or `None`.
        warm_start_epochs: Epochs of warm start.
        warm_start_lr: Step size of the warm start (both players).
        lr_decay: Per-epoch multiplicative step-size decay (1.0: none).
        ema_decay: Decay of the generator's EMA.
        image_size: Resize images to this (needed for imagenet32 data).
    """

    dataset: str
    architecture: str
    width: int
    loss: str
    method: str
    generator_lr: float
    discriminator_lr: float
    beta_1: float = 0.0
    beta_2: float = 0.9
    batch_size: int = 64
    snapshot_batch_size: int = 500
    epochs: int = 100
    warm_start_method: str | None = None
    warm_start_epochs: int = 0
    warm_start_lr: float = 2e-3
    lr_decay: float = 1.0
    ema_decay: float = 0.9999
    image_size: int | None = None


_SAGAN = {"architecture": "dcgan32_sa", "width": 64, "loss": "hinge"}
_ADAM = {"method": "adam", "generator_lr": 1e-4, "discriminator_lr": 4e-4}
_SVRE_CIFAR = {"method": "svre", "generator_lr": 1e-2, "discriminator_lr": 4e-2}
_SVRE_SVHN = {"method": "svre", "generator_lr": 1e-3, "discriminator_lr": 4e-3}
_WARM = {"warm_start_method": "se-a", "warm_start_epochs": 10}
_IMAGENET32 = {
    "dataset": "downsampled_imagenet/32x32",
    "architecture": "resnet32",
    "width": 128,
    "loss": "hinge",
    **_SVRE_CIFAR,
    "image_size": 32,
    "epochs": 20,
}

PRESETS = {
    "mnist-svre": Preset(
        "mnist",
        "mnist_dcgan",
        64,
        "non_saturating",
        "svre",
        1e-2,
        1e-2,
        batch_size=50,
        epochs=20,
        ema_decay=0.999,
    ),
    "mnist-svre-vrad": Preset(
        "mnist",
        "mnist_dcgan",
        64,
        "non_saturating",
        "svre-vrad",
        1e-3,
        1e-3,
        beta_1=0.5,
        beta_2=0.999,
        batch_size=50,
        epochs=20,
        ema_decay=0.999,
    ),
    "cifar10-adam": Preset("cifar10", **_SAGAN, **_ADAM),
    "cifar10-se-a": Preset("cifar10", **_SAGAN, **{**_ADAM, "method": "se-a"}),
    "cifar10-svre": Preset("cifar10", **_SAGAN, **_SVRE_CIFAR, lr_decay=0.99),
    "cifar10-svre-ws": Preset(
        "cifar10", **_SAGAN, **_SVRE_CIFAR, **_WARM, lr_decay=0.99
    ),
    "svhn-adam": Preset("svhn_cropped", **_SAGAN, **_ADAM),
    "svhn-svre": Preset("svhn_cropped", **_SAGAN, **_SVRE_SVHN),
    "svhn-svre-ws": Preset("svhn_cropped", **_SAGAN, **_SVRE_SVHN, **_WARM),
    "imagenet32-svre": Preset(**_IMAGENET32),
    "imagenet32-svre-ws": Preset(
        **_IMAGENET32, warm_start_method="se-a", warm_start_epochs=2
    ),
}


def names() -> list[str]:
    """The preset names."""
    return sorted(PRESETS)


def get(name: str) -> Preset:
    """A preset by name; `ValueError` listing the names otherwise."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Choose one of: {', '.join(names())}."
        )
    return PRESETS[name]


def _optimizers(name, g_lr, d_lr, preset, batches_per_epoch):
    method = optimizers.method(name)
    iterations_per_epoch = batches_per_epoch // method.minibatches_per_iteration()

    def one(lr):
        if preset.lr_decay != 1.0:
            lr = epoch_decay(lr, iterations_per_epoch, preset.lr_decay)
        kwargs = method.applicable(beta_1=preset.beta_1, beta_2=preset.beta_2)
        return method.build(lr, **kwargs)

    return {"generator_optimizer": one(g_lr), "discriminator_optimizer": one(d_lr)}


def train(
    name_or_preset,
    *,
    epochs: int | None = None,
    warm_start_epochs: int | None = None,
    width: int | None = None,
    batch_size: int | None = None,
    take: int | None = None,
    data_dir=None,
    seed: int = 0,
    callbacks=None,
    jit_compile="auto",
    verbose="auto",
    **fit_kwargs,
):
    """Builds the preset's data, networks and optimizers, and trains.

    Args:
        name_or_preset: A preset name or a `Preset`.
        epochs: Overrides the preset's length.
        warm_start_epochs: Overrides the preset's warm start length.
        width: Overrides the networks' width (small for trials).
        batch_size: Overrides the minibatch size (and caps the snapshot
            pass's batch size).
        take: Use only the first N examples (trials).
        data_dir: TFDS data folder.
        seed: Seed of the data order, the networks and the noise bank.
        callbacks: Keras callbacks.
        jit_compile: Passed to `compile`.
        verbose: Passed to `fit`.
        **fit_kwargs: Passed to `fit` (e.g. `steps_per_epoch`).

    Returns:
        `(gan, data, history)`.
    """
    preset = get(name_or_preset) if isinstance(name_or_preset, str) else name_or_preset
    epochs = preset.epochs if epochs is None else epochs
    warm = preset.warm_start_epochs if warm_start_epochs is None else warm_start_epochs
    if preset.warm_start_method is None:
        warm = 0
    keras.utils.set_random_seed(seed)
    batch_size = batch_size or preset.batch_size
    data = data_lib.load(
        preset.dataset,
        batch_size=batch_size,
        snapshot_batch_size=max(batch_size, preset.snapshot_batch_size),
        seed=seed,
        data_dir=data_dir,
        image_size=preset.image_size,
        take=take,
    )
    generator, discriminator = models.get_networks(
        preset.architecture, width=width or preset.width
    )
    gan = GAN(
        generator,
        discriminator,
        num_examples=data.num_examples,
        loss=preset.loss,
        ema_decay=preset.ema_decay,
        seed=seed,
    )
    main = _optimizers(
        preset.method,
        preset.generator_lr,
        preset.discriminator_lr,
        preset,
        data.batches_per_epoch,
    )
    warm_opts = None
    if warm:
        warm_opts = _optimizers(
            preset.warm_start_method,
            preset.warm_start_lr,
            preset.warm_start_lr,
            preset,
            data.batches_per_epoch,
        )
    history = fit_with_warm_start(
        gan,
        data.train,
        warm_optimizer=warm_opts or main,
        warm_epochs=warm,
        optimizer=main,
        epochs=epochs,
        compile_kwargs={"jit_compile": jit_compile},
        snapshot_data=data.snapshot,
        callbacks=callbacks,
        verbose=verbose,
        **fit_kwargs,
    )
    return gan, data, history
