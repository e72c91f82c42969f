"""The run folder: choosing it, guarding it, `runs/latest`, atomic writes.

`train` writes a run into a folder; `sample` and `export` write files next
to one. Nothing here creates or changes anything until every check passed:
`choose` and `check_can_create` only look, `prepare` writes.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import time

from keras_svre.cli.common import UsageError

# Where runs go when --out is not given: a new folder per run, and a
# `latest` link to the newest.
RUNS_ROOT = "runs"
LATEST = "latest"
# The files that make a folder hold a run (a new run must not replace them
# silently), and those a new run started with --overwrite deletes.
RUN_MARKERS = ("run.json", "checkpoint.keras", "metrics.csv", "model.keras")
RUN_FILES = RUN_MARKERS + ("metrics.json", "best.keras", "best.json")
RUN_FOLDERS = ("checkpoints", "tensorboard")
# The key of run.json that records the Keras backend of the run.
BACKEND_KEY = "backend"
# The file a training process holds locked while it writes the folder.
LOCK_FILE = ".lock"


def holds_run(folder) -> bool:
    return any((folder / name).exists() for name in RUN_MARKERS)


def check_can_create(folder, what):
    """Refuses a folder that cannot be created or written, without creating it."""
    if folder.exists():
        if not folder.is_dir():
            raise UsageError(f"{what} {folder} is a file, not a folder: give a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{what} {folder} is not writable: choose another folder")
        return
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(
            f"{what} {folder} cannot be created: {parent} is a file, not a "
            "folder; choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{what} {folder} cannot be created: {parent} is not writable; "
            "choose another path"
        )


def make_folder(folder, what):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"{what} {folder} cannot be created ({e.strerror or e}); choose "
            "another path"
        ) from None


def check_output_file(option, path, suffix, overwrite=False):
    """An output file of `sample`: its name, its folder, and no silent replacing."""
    if path.is_dir():
        raise UsageError(
            f"{option} {path} is a folder: give a file name, e.g. "
            f"{path}/samples{suffix}"
        )
    if path.suffix.lower() != suffix:
        raise UsageError(f"{option} {path} must be a {suffix} file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise UsageError(
            f"{option} {path} already exists: choose another path, or give "
            "--overwrite to replace it"
        )
    check_can_create(path.parent, f"the folder of {option}")


def choose(out, resume, overwrite) -> pathlib.Path:
    """The run folder: `--out`, or a new `runs/<date-time>` (`runs/latest` on resume).

    Checks it can be written and, for a new run, that it does not hold one
    (unless `--overwrite`); creates and changes nothing.
    """
    root = pathlib.Path(RUNS_ROOT)
    if out is None and resume:
        latest = root / LATEST
        if not latest.exists():
            raise UsageError(
                f"nothing to resume: no {latest} (give the run's folder with --out)"
            )
        folder = latest.resolve()
    elif out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        folder, n = root / stamp, 1
        while folder.exists() or folder.is_symlink():
            n += 1
            folder = root / f"{stamp}-{n}"
    else:
        folder = pathlib.Path(out)
    check_can_create(folder, "--out")
    if not resume and holds_run(folder) and not overwrite:
        raise UsageError(
            f"{folder} already holds a run: continue it with --resume, choose "
            "another --out, or give --overwrite to replace it"
        )
    return folder


def lock(folder):
    """Holds `folder` for this process until it exits; refuses a folder held.

    An advisory lock (`flock`) on `folder/.lock`: the system releases it when
    the process ends, however it ends, so a killed run leaves no stale lock.
    Returns the open lock file (keep it referenced); `None` where the system
    has no `flock`.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks through fcntl
        return None
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(
            f"another keras-svre train is writing to {folder}: wait for it to end, "
            "or choose another --out"
        ) from None
    return handle


def prepare(out, files, config, resume, overwrite, chief, pointed):
    """Creates and locks the run folder; a new run clears the old one (--overwrite).

    Returns the lock (see `lock`).

    Args:
        out: The run folder.
        files: This worker's folder in it (`out` for the chief).
        config: The run's `RunConfig` (written as `run.json`).
        resume: Whether the run continues.
        overwrite: Whether a new run may replace one in `out`.
        chief: Whether this worker is the chief.
        pointed: Whether `runs/latest` is to point at `out`.
    """
    make_folder(files, "--out")
    held = lock(files)
    # Checked again under the lock: another process may have started a run
    # in the folder since `choose` looked.
    if not resume and not overwrite and holds_run(files):
        raise UsageError(
            f"{files} already holds a run: continue it with --resume, choose "
            "another --out, or give --overwrite to replace it"
        )
    from keras_svre import callbacks

    callbacks.remove_partial_saves(files)
    callbacks.remove_partial_saves(files / "checkpoints")
    if resume:
        if chief:
            write_run_options(out, config)
        return held
    if holds_run(files):
        print(
            f"keras-svre train: --overwrite: deleting the run in {files} and "
            "starting a new one",
            file=sys.stderr,
        )
        for name in RUN_FILES:
            (files / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(files / name, ignore_errors=True)
        for grid in files.glob("samples_epoch_*.png"):
            grid.unlink()
    write_run_options(files, config)
    if chief and pointed:
        point_latest_at(out)
    return held


def write_run_options(files, config):
    """The run's settings as `run.json` (a valid `--config` file), and the backend."""
    import keras

    recorded = {**config.to_dict(), BACKEND_KEY: keras.backend.backend()}
    write_text_atomically(files / "run.json", json.dumps(recorded, indent=1))


def write_text_atomically(path, text):
    """Writes a temporary file next to `path`, then renames it into place."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def point_latest_at(out):
    """`runs/latest` -> the new run (a relative link, replaced atomically)."""
    latest = out.parent / LATEST
    tmp = out.parent / f".{LATEST}-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(out.name, tmp, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError as e:  # e.g. no symbolic links on this file system
        print(
            f"keras-svre train: could not point {latest} at {out} ({e})",
            file=sys.stderr,
        )


def where_the_run_is(out, pointed) -> str:
    where = f"keras-svre train: the run is in {out}"
    if pointed:
        where += f" ({out.parent / LATEST} points to it)"
    return where


def recorded_settings(out, setting_names) -> dict:
    """`--resume`: the run's own settings, from `run.json` in --out."""
    path = out / "run.json"
    if not path.exists():
        raise UsageError(f"nothing to resume in {out}: no {path.name}")
    saved = json.loads(path.read_text())
    check_same_backend(saved, out)
    # Runs written before a setting existed have its old default: the width
    # and lengths were always recorded.
    return {k: v for k, v in saved.items() if k in setting_names}


def check_same_backend(saved: dict, out):
    """A run resumes on the backend it was trained on (its data order is that
    backend's: NumPy minibatches on JAX, tf.data on TensorFlow)."""
    import keras

    trained_on = saved.get(BACKEND_KEY, "tensorflow")
    if trained_on != keras.backend.backend():
        raise UsageError(
            f"the run in {out} was trained on the {trained_on} backend, and its "
            f"data order is that backend's: resume it with KERAS_BACKEND={trained_on}"
        )
