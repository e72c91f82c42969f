"""Training games with `tf.distribute`: strategies, data sharding, worker roles.

A `keras_svre.Game` trains under any `tf.distribute` strategy the way a Keras
model does: build and compile it inside `strategy.scope()` and call `fit`
with a dataset whose batch is the GLOBAL batch (each replica gets its share).
What the game adds to Keras:

- every evaluation of the game's field (at the current point, at the
  snapshot, at the extrapolated point) is all-reduced across replicas and
  workers once, all players' gradients in one all-reduce, so the
  extrapolation and the update use the global-batch field (the mean of the
  replicas' means: give every replica an equal share of the batch). The
  update then goes through Keras' `optimizer.apply`, which sums what each
  replica passes: each passes its 1/R share of the already-clipped global
  direction, so clipping, learning-rate schedules and the optimizers' state
  behave as on one device (that sum is one more all-reduce per step);
- the snapshot pass sums the field over the whole finite-sum dataset across
  all replicas and workers (each example once) before dividing;
- the snapshot-restart draws are made on the host from the game's seed and
  a counter saved with the model, so every worker draws the same;
- the GAN's noise bank is a model variable replicated on every device: each
  replica gathers the latents of its own examples by their index, so the
  noise is always paired with its example however the data is split.

Keras' default batch norm normalises each replica's share with its own
statistics; `synchronize_batch_norm` makes training independent of the split
(`keras-svre train` does it under any strategy). The weights after K steps on
two replicas equal those on one device with the same global batches, data
order and noise bank, to float32 rounding (`tests/test_distribute.py`).

This module holds the pieces around that: making a strategy by name (the
`keras-svre train --strategy` flag), the dataset option that keeps the
finite-sum indices intact under multi-worker training, synchronised batch
norm, worker roles for checkpoints, and the work-around for the Keras bug
that breaks `fit` under `MultiWorkerMirroredStrategy`.

**The Keras bug (keras-team/keras#20585, Keras 3.15).** Under
`MultiWorkerMirroredStrategy` with more than one worker, Keras' TensorFlow
trainer fails in two places: before training, its symbolic build reduces the
first distributed batch with `strategy.reduce`, which raises on per-replica
inputs; after each step it reduces the step's logs with
`strategy.reduce("MEAN", value, axis=0)`, which raises on scalars. A `Game`
needs neither: it is fully built by `compile` (variables and optimizer
slots), so it skips the symbolic build, and under multi-worker training its
train step returns its logs as shape-`[1]` tensors (`logs_for_reduction`),
which Keras' reduction turns back into the scalar mean over all replicas.
`tests/test_distribute.py` runs `fit` on two worker processes and pins this.

**TPU.** The train step is one `tf.function` (Keras') with no host round
trip inside: the restart draw, the snapshot decision and checkpointing
happen in callbacks between executions (use `steps_per_execution` to run
many steps per execution), the data has static shapes (`drop_remainder`)
and the step reads no Python value that depends on a tensor. Shapes must
also be static in the snapshot pass: on a TPU, use a snapshot batch size
that divides the number of examples and is a multiple of the number of
replicas (`check_static_batches`; `keras-svre train --strategy tpu`
refuses other sizes). What was checked here, without a TPU
(`tests/test_distribute.py`): the whole SVRE train step compiles with XLA
(`jit_compile=True`), which refuses dynamic shapes and Python callbacks as a
TPU does, and the snapshot pass's graph holds no op that calls Python. Not
checked: a run on a TPU itself.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

#: Names accepted by `make_strategy` (and `keras-svre train --strategy`).
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


def make_strategy(name: str = "default", tpu: str | None = None):
    """Creates a `tf.distribute` strategy by name.

    Create it at the start of the program, before any model: under
    `MultiWorkerMirroredStrategy` TensorFlow must set up the cluster before
    other ops run.

    Args:
        name: `"default"` (no distribution: the default strategy),
            `"mirrored"` (all local GPUs, or the CPU), `"multiworker"`
            (`MultiWorkerMirroredStrategy`; the cluster and this worker's
            role come from the `TF_CONFIG` environment variable) or `"tpu"`
            (`TPUStrategy`).
        tpu: For `"tpu"`: the TPU's address or name, given to
            `TPUClusterResolver` (`None`: the TPU of this VM / Colab).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: For an unknown name, a `tpu` address without
            `name="tpu"`, or a missing or malformed `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}. Choose one of: {', '.join(STRATEGIES)}."
        )
    if tpu is not None and name != "tpu":
        raise ValueError(
            f"A TPU address was given (tpu={tpu!r}) but the strategy is {name!r}: "
            "use the 'tpu' strategy."
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def check_tf_config() -> dict:
    """Parses `TF_CONFIG` and checks that it names a cluster and this task.

    Returns:
        The parsed configuration.

    Raises:
        ValueError: If `TF_CONFIG` is unset, not JSON, or lacks `cluster` or
            `task`, saying what a valid one looks like.
    """
    example = (
        '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "Multi-worker training needs the TF_CONFIG environment variable, set "
            f"on every worker, e.g. TF_CONFIG='{example}'."
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}.") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError(
            f"TF_CONFIG must have 'cluster' and 'task' entries, e.g. '{example}'. "
            f"Received: {raw!r}."
        )
    return config


def is_multi_worker(strategy=None) -> bool:
    """Whether `strategy` (default: the current one) spans several workers."""
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    workers = sum(
        spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker")
    )
    return workers > 1


def worker_index(strategy=None) -> int:
    """This worker's rank among the workers (0 when not multi-worker)."""
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    has_chief = "chief" in spec.jobs
    if resolver.task_type == "chief":
        return 0
    return int(resolver.task_id) + (1 if has_chief else 0)


def is_chief(strategy=None) -> bool:
    """Whether this worker writes the run's files (the chief, worker 0)."""
    return worker_index(strategy) == 0


def logs_for_reduction(logs: dict) -> dict:
    """A train step's logs in the form Keras can reduce (keras-team/keras#20585).

    Called inside the train step (replica context). Under multi-worker
    training Keras reduces every log with `strategy.reduce("MEAN", v,
    axis=0)`, which raises on scalars: the logs are given shape `[1]`, and the
    reduction returns their scalar mean over all replicas. Anywhere else the
    logs are returned unchanged.
    """
    if not is_multi_worker():
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def all_reduce_mean(tensors: list) -> list:
    """The mean over replicas of per-replica tensors (in replica context).

    The identity on one device or outside a strategy's `run`.
    """
    context = tf.distribute.get_replica_context()
    strategy = tf.distribute.get_strategy()
    if context is None or strategy.num_replicas_in_sync == 1:
        return tensors
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, tensors)


def cond_on_every_replica(predicate, true_fn, false_fn) -> None:
    """`tf.cond(predicate, true_fn, false_fn)` that may hold Keras' `apply`.

    Keras' optimizers merge across replicas inside `apply`, which a `cond` in
    replica context cannot hold: under a strategy the decision is taken in
    cross-replica context (every replica must have the same `predicate`, e.g.
    from all-reduced values), as Keras' `LossScaleOptimizer` does, and the
    chosen function runs on every replica.
    """
    context = tf.distribute.get_replica_context()
    strategy = tf.distribute.get_strategy()
    if context is None or strategy.num_replicas_in_sync == 1:
        tf.cond(predicate, true_fn, false_fn)
        return

    def decide(distribution, predicate):
        first = distribution.experimental_local_results(predicate)[0]

        def on_replicas(fn):
            def run():
                distribution.extended.call_for_each_replica(fn)
                return tf.constant(True)

            return run

        return tf.cond(first, on_replicas(true_fn), on_replicas(false_fn))

    context.merge_call(decide, args=(predicate,))


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Makes multi-worker input split each global batch, never the files.

    `tf.distribute`'s default (`AUTO`) shards a file-backed dataset by files
    across workers. The finite-sum pipelines number the examples after
    reading them (the index that pairs each example with its latent vector),
    so sharding the files would give every worker its own, clashing
    numbering. `DATA` sharding keeps one numbering: every worker reads the
    same stream and takes its share of each global batch. Elsewhere the
    option has no effect.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def synchronize_batch_norm(*models) -> int:
    """Makes the `BatchNormalization` layers of `models` use global-batch statistics.

    By default Keras normalises each replica's share of the batch with that
    share's own statistics, so results change with the number of replicas.
    Synchronised batch norm all-reduces the moments across replicas (one
    small all-reduce per layer and call): the forward pass, and so the
    training, is then that of one device with the global batch.

    Returns:
        The number of layers changed.
    """
    import keras

    def layers(model):
        for layer in getattr(model, "layers", ()):
            yield layer
            yield from layers(layer)

    count = 0
    for model in models:
        for layer in layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                # Read at call time by Keras' TensorFlow batch norm.
                layer.synchronized = True
                count += 1
    return count


def check_static_batches(
    num_examples: int, batch_size: int, snapshot_batch_size: int, replicas: int
) -> None:
    """Checks that every replica always gets batches of one static shape (TPU).

    Raises:
        ValueError: Saying which size to change, when the global batch or the
            snapshot batch does not split evenly across replicas, or when the
            snapshot pass would end with a smaller batch.
    """
    if batch_size % replicas:
        raise ValueError(
            f"The batch size ({batch_size}) must be a multiple of the number of "
            f"replicas ({replicas}) so that every replica gets an equal share."
        )
    if snapshot_batch_size % replicas or num_examples % snapshot_batch_size:
        raise ValueError(
            f"With static shapes (TPU) the snapshot batch size "
            f"({snapshot_batch_size}) must divide the number of examples "
            f"({num_examples}) and be a multiple of the number of replicas "
            f"({replicas}), so that the snapshot pass has no smaller last batch."
        )
