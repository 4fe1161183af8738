import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from helpers.harness import data
from helpers.harness.data import DatasetUnavailableError, load_dataset


def test_digits_are_uint8_rgb_32px_with_ten_classes(digits):
    assert digits.x_train.shape == (1437, 32, 32, 3)
    assert digits.x_test.shape == (360, 32, 32, 3)
    assert digits.x_train.dtype == np.uint8
    assert digits.y_train.dtype == np.int32 and digits.y_train.shape == (1437,)
    assert digits.num_classes == 10 and digits.class_names[3] == "3"
    assert set(np.unique(digits.y_train)) == set(range(10))
    assert set(np.unique(digits.y_test)) <= set(range(10))
    assert digits.x_train.min() == 0 and digits.x_train.max() == 255
    # Grey images: the three channels are copies.
    np.testing.assert_array_equal(digits.x_train[..., 0], digits.x_train[..., 2])


def test_digits_test_split_does_not_depend_on_the_seed():
    a = load_dataset("digits", seed=1)
    b = load_dataset("digits", seed=2)
    np.testing.assert_array_equal(a.x_test, b.x_test)


def test_upsample_bilinear_matches_keras_resize():
    images = np.random.default_rng(0).uniform(0, 16, size=(3, 8, 8)).astype("float32")
    ours = data.upsample_bilinear(images, factor=4)
    reference = keras.ops.image.resize(images[..., None], (32, 32), interpolation="bilinear",
                                       antialias=False)
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(reference)[..., 0], atol=1e-4)


def test_subsets_have_the_requested_sizes_and_follow_the_seed():
    a = load_dataset("digits", n_train=200, n_test=50, seed=3)
    b = load_dataset("digits", n_train=200, n_test=50, seed=3)
    c = load_dataset("digits", n_train=200, n_test=50, seed=4)
    assert len(a.x_train) == 200 and len(a.y_train) == 200
    assert len(a.x_test) == 50 and len(a.y_test) == 50
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_train, c.y_train)


def test_validation_split_holds_out_a_disjoint_fraction(digits):
    split = load_dataset("digits", n_train=400, validation_split=0.25, seed=0)
    assert len(split.x_train) == 300 and len(split.x_val) == 100
    assert split.validation_data[0] is split.x_val
    train_rows = {row.tobytes() for row in split.x_train}
    assert not any(row.tobytes() in train_rows for row in split.x_val)
    assert digits.validation_data is None


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_dataset_is_loaded_with_classes_from_its_labels(tmp_path):
    rng = np.random.default_rng(0)
    path = _write_npz(
        tmp_path / "mine.npz",
        x_train=rng.integers(0, 256, (20, 16, 16), dtype=np.uint8),  # grey, no channel axis
        y_train=(np.arange(20) % 4).reshape(-1, 1),  # Keras-style (n, 1) labels
        x_test=rng.integers(0, 256, (8, 16, 16), dtype=np.uint8),
        y_test=np.arange(8) % 4,
        class_names=np.array(["a", "b", "c", "d"]),
    )
    loaded = load_dataset(path)
    assert loaded.x_train.shape == (20, 16, 16, 3) and loaded.x_train.dtype == np.uint8
    assert loaded.y_train.shape == (20,) and loaded.y_train.dtype == np.int32
    assert loaded.num_classes == 4 and loaded.class_names == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(loaded.y_test, np.arange(8) % 4)


def test_npz_without_class_names_counts_classes_from_labels(tmp_path):
    x = np.zeros((6, 8, 8, 3), np.uint8)
    path = _write_npz(tmp_path / "d.npz", x_train=x, y_train=np.array([0, 1, 2, 6, 1, 0]),
                      x_test=x[:2], y_test=np.array([0, 1]))
    loaded = load_dataset(path)
    assert loaded.num_classes == 7 and loaded.class_names[6] == "6"


def test_npz_missing_arrays_are_named(tmp_path):
    path = _write_npz(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8),
                      y_train=np.zeros(2, int))
    with pytest.raises(ValueError, match="lacks the array\\(s\\) x_test, y_test"):
        load_dataset(path)


def test_npz_float_images_are_rejected_with_the_dtype(tmp_path):
    x = np.zeros((2, 4, 4, 3), np.float32)
    path = _write_npz(tmp_path / "bad.npz", x_train=x, y_train=np.zeros(2, int), x_test=x,
                      y_test=np.zeros(2, int))
    with pytest.raises(ValueError, match="x_train must be uint8.*float32"):
        load_dataset(path)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="cifar10, cifar100, digits or the path"):
        load_dataset("imagenet")


def test_bad_subset_sizes_are_named():
    with pytest.raises(ValueError, match="n_train must be an integer >= 0"):
        load_dataset("digits", n_train=-1)
    with pytest.raises(ValueError, match="validation_split must be in"):
        load_dataset("digits", validation_split=1.0)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loaders_flatten_labels_and_name_classes(monkeypatch, name, classes):
    rng = np.random.default_rng(0)

    def fake_load_data():
        x = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
        y = (np.arange(5) * 7 % classes).reshape(-1, 1)
        return (x, y), (x[:2], y[:2])

    monkeypatch.setattr(getattr(keras.datasets, name), "load_data", fake_load_data)
    loaded = load_dataset(name)
    assert loaded.num_classes == classes
    assert loaded.y_train.shape == (5,) and loaded.y_train.dtype == np.int32
    assert loaded.class_names[0] == ("airplane" if classes == 10 else "apple")


def test_offline_cifar_fails_with_one_clear_message(tmp_path):
    """No network and an empty Keras cache: a DatasetUnavailableError naming the way out."""
    script = textwrap.dedent(
        """
        import socket

        def no_network(*args, **kwargs):
            raise OSError("network is unreachable (blocked by the test)")

        socket.socket.connect = no_network
        socket.create_connection = no_network
        from helpers.harness.data import load_dataset
        load_dataset("cifar100")
        """
    )
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("helpers.harness.data.DatasetUnavailableError: could not download 'cifar100'")
    assert "dataset='digits'" in last_line and ".npz" in last_line
    assert done.stderr.count("Traceback") == 1  # no chained urllib traceback
    assert "urllib" not in done.stderr


def test_dataset_unavailable_is_a_runtime_error():
    assert issubclass(DatasetUnavailableError, RuntimeError)


def _valid_arrays(n_train=4, n_test=2, shape=(4, 4, 3)):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train) % 3,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test) % 3,
    }


@pytest.mark.parametrize("change,message", [
    ({"x_train": np.zeros((4, 4, 4, 2), np.uint8)},
     "x_train must have shape \\(n, height, width\\[, 1 or 3\\]\\), got \\(4, 4, 4, 2\\)"),
    ({"x_test": np.zeros((2, 16), np.uint8)}, "x_test must have shape .* got \\(2, 16\\)"),
    ({"y_train": np.arange(3)}, "x_train has 4 images but y_train has 3 labels"),
    ({"y_test": np.array([0.0, 1.0])}, "y_test must be a vector of integer class labels, got dtype float64"),
    ({"y_train": np.array([0, 1, -1, 2])}, "y_train has negative labels \\(min -1\\)"),
    ({"y_test": np.array([0, 7]), "class_names": np.array(["a", "b", "c"])},
     "3 class_names but labels go up to 7"),
    ({"x_test": np.zeros((2, 8, 8, 3), np.uint8)},
     "train images \\(4, 4, 3\\) and test images \\(8, 8, 3\\) differ in shape"),
])
def test_bad_npz_contents_are_named(tmp_path, change, message):
    path = _write_npz(tmp_path / "bad.npz", **{**_valid_arrays(), **change})
    with pytest.raises(ValueError, match=message):
        load_dataset(path)


def test_a_valid_npz_of_the_bad_data_tests_loads(tmp_path):
    """The arrays the bad-data tests start from are fine: each failure is the change."""
    loaded = load_dataset(_write_npz(tmp_path / "good.npz", **_valid_arrays()))
    assert loaded.num_classes == 3 and loaded.image_shape == (4, 4, 3)


def test_a_missing_npz_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="no such .npz file"):
        load_dataset(str(tmp_path / "nowhere.npz"))
