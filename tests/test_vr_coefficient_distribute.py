"""alpha-SVRE under MirroredStrategy: the statistics C and V (written in the
replicas' step, from global-batch gradients) equal one device's.

The run happens in a child process (this file run as a script): logical CPU
devices must be configured before TensorFlow initialises.
"""

import os
import sys

import numpy as np
import pytest

from tests import test_distribute as runs


def _child(out_dir):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras_svre

    svre = keras_svre.SVRE
    # `runs._train` builds `keras_svre.SVRE(0.1, restart_probability=0.3)`.
    keras_svre.SVRE = lambda *args, **kwargs: svre(
        *args, vr_coefficient="optimal", vr_statistics_reset=False, **kwargs
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    runs._save_run(os.path.join(out_dir, "single.npz"), runs._game_run("svre"))
    mirrored = runs._game_run("svre", strategy)
    runs._save_run(os.path.join(out_dir, "mirrored.npz"), mirrored)


@pytest.mark.slow
def test_mirrored_two_replicas_keep_one_devices_statistics(tmp_path):
    runs._run_children([([sys.executable, __file__, str(tmp_path)], runs._child_env())])
    single = runs._load_run(tmp_path / "single.npz")
    mirrored = runs._load_run(tmp_path / "mirrored.npz")
    runs._assert_runs_close(single, mirrored)
    statistics = {k: v for k, v in single[1].items() if "correction_" in k}
    # Six variable tensors, C and V each, and real values in them.
    assert len(statistics) == 12
    assert statistics["svre/d_dense_kernel_correction_variance"] > 0
    assert not np.allclose(single[0]["g/dense/kernel"], 0)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _child(sys.argv[1])
