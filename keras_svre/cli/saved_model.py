"""Writing a generator as a TensorFlow SavedModel, and what a .keras file of
it needs to load."""

from __future__ import annotations

import os
import shutil


def custom_classes(model) -> list[str]:
    """The classes in `model`'s saved config that Keras itself does not define."""
    import keras

    found = set()

    def visit(node):
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and "class_name" in node:
                if module != "keras" and not module.startswith("keras."):
                    found.add(node.get("registered_name") or node["class_name"])
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(keras.saving.serialize_keras_object(model))
    return sorted(found)


def write_saved_model(generator, latent_dim, out):
    """A SavedModel with one signature: `latent` [N, latent_dim] -> `image`.

    Written next to `out` and then renamed into place, so that a failed
    export leaves an existing `out` as it was.
    """
    import keras
    import tensorflow as tf

    def serve(latent):
        image = generator(latent, training=False)
        return {"image": tf.cast(image, tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(generator)
    # The first endpoint is also exported as "serving_default".
    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[tf.TensorSpec([None, latent_dim], tf.float32, "latent")],
    )
    partial = out.parent / f".partial-{out.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        archive.write_out(os.fspath(partial), verbose=False)
        if out.exists() or out.is_symlink():
            old = out.parent / f".old-{out.name}-{os.getpid()}"
            os.replace(out, old)
            os.replace(partial, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
