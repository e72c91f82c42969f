"""`--strategy`: the `tf.distribute` strategy `train` runs under (TensorFlow),
or one device (other backends)."""

from __future__ import annotations

from keras_svre.cli.common import UsageError

# The same as keras_svre.distribute.STRATEGIES (tests/test_cli.py checks).
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


class OneDevice:
    """What `train` uses of a `tf.distribute` strategy, off TensorFlow: one
    process, on the devices Keras gives it."""

    num_replicas_in_sync = 1

    def scope(self):
        import contextlib

        return contextlib.nullcontext()


def make_strategy(args):
    """`--strategy`'s `tf.distribute` strategy; off TensorFlow, `OneDevice()`.

    TensorFlow-only options are refused there, naming the backend's own way.
    """
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        if args.strategy != "default":
            raise UsageError(
                f"--strategy {args.strategy} is TensorFlow's tf.distribute; on the "
                f"{backend} backend train on several devices with keras.distribution "
                "from Python (keras.distribution.set_distribution("
                "keras.distribution.DataParallel()), then keras_svre.run.train; see "
                "README, 'JAX backend'), or set KERAS_BACKEND=tensorflow"
            )
        if args.deterministic:
            raise UsageError(
                "--deterministic sets TensorFlow's op determinism; on the "
                f"{backend} backend CPU runs are deterministic already and GPU runs "
                "need XLA_FLAGS=--xla_gpu_deterministic_ops=true, or set "
                "KERAS_BACKEND=tensorflow"
            )
        if args.gradient_noise_every:
            raise UsageError(
                "--gradient-noise-every measures on a tf.data pipeline in a "
                f"tf.function, which the {backend} backend cannot run: drop it, "
                "or set KERAS_BACKEND=tensorflow"
            )
        return OneDevice()
    import tensorflow as tf

    from keras_svre import distribute

    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    # Before anything else runs: a multi-worker strategy sets up the cluster.
    try:
        return distribute.make_strategy(args.strategy, args.tpu)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise UsageError(f"could not set up --strategy {args.strategy}: {e}") from None


def worker_index(strategy) -> int:
    """This worker's rank (the chief's is 0)."""
    if isinstance(strategy, OneDevice):
        return 0
    from keras_svre import distribute

    return distribute.worker_index(strategy)


def check_static_batches(args, config, finite_sum, replicas):
    """TPUs need every batch of one size: the data must split evenly."""
    if args.strategy != "tpu":
        return
    from keras_svre import distribute

    try:
        distribute.check_static_batches(
            finite_sum.num_examples,
            config.batch_size,
            config.snapshot_batch_size,
            replicas,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
