"""Datasets for every notebook of the book.

``load_dataset(name)`` gives the same record whatever the source:

* ``"cifar10"`` / ``"cifar100"`` — the real datasets through ``keras.datasets``
  (downloaded once, then read from the Keras cache);
* ``"digits"`` — scikit-learn's handwritten digits, which ship inside the
  scikit-learn wheel, upsampled to 32x32x3. Real images that need no network:
  the smoke profile and the tests use them;
* a path to a local ``.npz`` file with ``x_train, y_train, x_test, y_test``
  (bring your own data; optional ``class_names``);
* a path to an image folder, or a ``.zip`` of one: one folder of images per
  class, either inside ``train/`` and ``test/`` folders or alone (a fixed,
  stratified test split is then taken); ``helpers.harness.image_folder``.

Images are ``uint8`` arrays of shape ``(n, height, width, 3)``; labels are
``int32`` vectors in ``[0, num_classes)``. Used by every notebook.

The order of the images, before any subset: CIFAR-10 and CIFAR-100 keep their
official order, which is already mixed (no run of one class); digits come in
the order of a fixed random split, mixed too; an image folder or ``.zip`` comes
in a fixed shuffled order (``image_folder.ORDER_SEED``, the same in every run)
instead of its sorted, class-by-class listing; a ``.npz`` keeps the order of
its arrays, which may be sorted by class. So ``x_test[:n]`` is only a fair
look at the test set by luck: a notebook that shows or measures some test
images takes ``stratified_sample(data.y_test, n)``, which is mixed whatever the
order.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib

import numpy as np

from helpers.harness import image_folder

OFFLINE_DATASET = "digits"
KERAS_DATASETS = ("cifar10", "cifar100")
DATASET_NAMES = KERAS_DATASETS + (OFFLINE_DATASET,)
# Image shape and classes of the named datasets, so that a model can be built
# for one without loading it (the benchmark, the FLOP count, the tests).
DATASET_SHAPES = {
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "digits": ((32, 32, 3), 10),
}


# The fraction of each class that a folder of class folders (no train/ and
# test/ folders) holds out as its test set.
TEST_SPLIT = 0.2


def dataset_shape(
    dataset: str, test_split: float = TEST_SPLIT, resize_to: int | tuple[int, int] | None = None
) -> tuple[tuple[int, int, int], int]:
    """``(image_shape, num_classes)`` of a named dataset or an image folder, without loading it.

    An image folder (or ``.zip``) is listed and one of its images decoded;
    ``test_split`` and ``resize_to`` are ``load_dataset``'s.
    """
    if is_image_folder(dataset):
        return image_folder.peek(dataset, test_split, _size(resize_to))
    if dataset not in DATASET_SHAPES:
        raise ValueError(
            f"dataset {dataset!r} has no known shape: give the images and the class count"
        )
    return DATASET_SHAPES[dataset]


def is_image_folder(dataset: str) -> bool:
    """Whether ``dataset`` names an image folder: a directory or a ``.zip`` path.

    The names of ``DATASET_NAMES`` come first: a folder called ``cifar10`` in
    the working directory is ``./cifar10``.
    """
    return dataset not in DATASET_NAMES and (
        os.path.isdir(dataset) or dataset.lower().endswith(".zip")
    )


def is_dataset_path(dataset: str) -> bool:
    """Whether ``dataset`` is an existing ``.npz`` file, image folder or ``.zip``."""
    return os.path.isdir(dataset) or (
        os.path.isfile(dataset) and dataset.lower().endswith((".npz", ".zip"))
    )

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

# How pages and figures name the named datasets (``Dataset.label``).
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "digits"}
# The extensions ``Dataset.label`` drops from a dataset file's name.
_DATASET_EXTENSIONS = (".zip", ".npz")

# The digits split is fixed (not tied to the run's seed) so that every run,
# whatever its seed, is evaluated on the same 360 test images.
_DIGITS_TEST_SIZE = 360
_DIGITS_SPLIT_SEED = 0


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be downloaded and is not in the local cache."""


@dataclasses.dataclass
class Dataset:
    """Images and labels of one dataset, split into train / validation / test.

    ``name`` is the dataset's name, or the file or folder name of a path
    (``cifar10-jpeg.zip``): records quote it; the full path stays in the run's
    parameters. ``label`` is what a figure's title shows.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def label(self) -> str:
        """A readable name for titles, never a path: ``"CIFAR-10"``, ``"CIFAR-100"``,
        ``"digits"``, or a dataset file's or folder's name without its ``.zip`` or
        ``.npz`` extension (``"cifar10-jpeg"`` for ``/data/cifar10-jpeg.zip``)."""
        if self.name in DATASET_LABELS:
            return DATASET_LABELS[self.name]
        base = os.path.basename(os.path.normpath(self.name.replace("\\", "/")))
        if base.lower().endswith(_DATASET_EXTENSIONS) and len(base) > 4:
            base = base[:-4]
        return base

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def validation_data(self):
        """``(x_val, y_val)`` for ``fit``, or ``None`` without a validation split."""
        if self.x_val is None:
            return None
        return self.x_val, self.y_val

    def summary(self) -> str:
        val = 0 if self.x_val is None else len(self.x_val)
        return (
            f"{self.name}: {len(self.x_train)} train / {val} validation / "
            f"{len(self.x_test)} test images of shape {self.image_shape}, "
            f"{self.num_classes} classes"
        )


def load_dataset(
    name: str,
    n_train: int = 0,
    n_test: int = 0,
    validation_split: float = 0.0,
    seed: int = 0,
    *,
    test_split: float = TEST_SPLIT,
    resize_to: int | tuple[int, int] | None = None,
) -> Dataset:
    """Load a dataset by name or path, optionally subset and split.

    Args:
        name: ``"cifar10"``, ``"cifar100"``, ``"digits"``, a path to a
            ``.npz`` file holding ``x_train, y_train, x_test, y_test``, or a
            path to an image folder or a ``.zip`` of one
            (``helpers.harness.image_folder``).
        n_train: keep this many training images (a random subset drawn with
            ``seed``) before the validation split; 0 keeps them all. More
            than the dataset has is an error.
        n_test: keep this many test images (random subset); 0 keeps them all.
        validation_split: fraction of the (subset) training images held out
            as a validation set, in ``[0, 1)``.
        seed: seed of the subset and split draws. An image folder's images
            are first put in a fixed shuffled order, not drawn with ``seed``
            (see the module's docstring on the order of each kind of dataset).
        test_split: for a folder of class folders without ``train/`` and
            ``test/``: the fraction of each class held out as the test set,
            in ``(0, 1)``, drawn with a fixed seed (the same split every call,
            whatever ``seed``).
        resize_to: image folders only: resize every image to this size
            (``(height, width)``, or one int for a square), bilinear. Without
            it, images of different sizes are an error.

    An image folder decodes only the images the subsets keep.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a non-empty string, got {name!r}")
    for param, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{param} must be an integer >= 0 (0 = all), got {value!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if not 0.0 < test_split < 1.0:
        raise ValueError(f"test_split must be in (0, 1), got {test_split!r}")
    size = _size(resize_to)

    if is_image_folder(name):
        x_train, x_test, class_names = _list_image_folder(name, test_split)
        y_train, y_test = x_train.labels, x_test.labels
    elif resize_to is not None:
        raise ValueError(f"resize_to applies to image folders only, not to dataset {name!r}")
    elif name in KERAS_DATASETS:
        x_train, y_train, x_test, y_test, class_names = _load_keras_dataset(name)
    elif name == OFFLINE_DATASET:
        x_train, y_train, x_test, y_test, class_names = _load_digits()
    elif name.endswith(".npz") or os.path.isfile(name):
        x_train, y_train, x_test, y_test, class_names = _load_npz(name)
    else:
        raise ValueError(
            f"dataset {name!r} is unknown: use one of {', '.join(DATASET_NAMES)} "
            "or the path of a local .npz file, image folder or .zip of one"
        )

    rng = np.random.default_rng(seed)
    if n_train:
        keep = _subset(len(y_train), n_train, "n_train", "training", name, rng)
        x_train, y_train = _take(x_train, keep), y_train[keep]
    if n_test:
        keep = _subset(len(y_test), n_test, "n_test", "test", name, rng)
        x_test, y_test = _take(x_test, keep), y_test[keep]
    if isinstance(x_train, image_folder.ImageFiles):
        x_train, x_test = _decode_both(x_train, x_test, size)

    x_val = y_val = None
    if validation_split:
        n_val = int(round(len(x_train) * validation_split))
        if not 0 < n_val < len(x_train):
            raise ValueError(
                f"validation_split={validation_split} of {len(x_train)} training "
                "images leaves an empty training or validation set"
            )
        order = rng.permutation(len(x_train))
        val, train = order[:n_val], order[n_val:]
        x_val, y_val = x_train[val], y_train[val]
        x_train, y_train = x_train[train], y_train[train]

    return Dataset(
        name=name if name in DATASET_NAMES else os.path.basename(os.path.normpath(name)),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=list(class_names),
        x_val=x_val,
        y_val=y_val,
    )


def stratified_sample(labels, n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices into ``labels``, spread evenly over the classes and interleaved.

    For the images a notebook shows or measures ("some test images"): a
    dataset's first ``n`` images may all be of one class (a ``.npz`` saved
    sorted by class), these never are.

    * No index repeats; every class present gets ``n // k`` or ``n // k + 1``
      of them (``k`` classes; which classes get the extra one is drawn with
      ``seed``). A class with fewer images gives all it has and the others
      share what it leaves, still as evenly as they can.
    * The indices come class-interleaved: round after round, one of each class
      that has one left, the classes in an order drawn with ``seed``. Any
      prefix of ``k`` or more indices covers every class (with ``n >= k``).
    * Which images of a class are taken is drawn with ``seed`` too: the same
      seed gives the same indices, another seed other ones.

    Args:
        labels: 1-D array of integer class labels (``data.y_test``).
        n: how many indices, from 1 to ``len(labels)``.
        seed: seed of the draw.

    Returns:
        ``int64`` indices into ``labels``: ``x[indices]``, ``y[indices]``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise ValueError(
            f"labels must be a 1-D array of integer class labels, got dtype {labels.dtype} "
            f"and shape {labels.shape}"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(labels):
        raise ValueError(f"n must be an integer from 1 to len(labels) = {len(labels)}, got {n!r}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = _even_quotas(counts, int(n), rng)
    # Each class's images, shuffled; the class takes its first ``quota``.
    members = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas)]
    order = rng.permutation(len(classes))
    rounds = [[members[c][r] for c in order if r < len(members[c])]
              for r in range(int(quotas.max()))]
    return np.array([index for round_ in rounds for index in round_], dtype=np.int64)


def _even_quotas(counts: np.ndarray, n: int, rng) -> np.ndarray:
    """How many images each class gives to a sample of ``n``: as even as ``counts`` allows.

    A class with no more images than an even share gives them all; the rest is
    shared evenly among the others, the remainder one each to classes drawn
    with ``rng``.
    """
    quotas = np.zeros(len(counts), dtype=np.int64)
    open_ = np.ones(len(counts), dtype=bool)
    left = n
    while open_.any():
        share = left // int(open_.sum())
        full = open_ & (counts <= share)
        if not full.any():
            # Every open class has more than ``share`` images: each gives
            # ``share``, and the remainder goes one each to drawn classes.
            quotas[open_] = share
            extra = left - share * int(open_.sum())
            quotas[rng.choice(np.flatnonzero(open_), size=extra, replace=False)] += 1
            break
        quotas[full] = counts[full]
        left -= int(counts[full].sum())
        open_ &= ~full
    return quotas


def _size(resize_to) -> tuple[int, int] | None:
    """``resize_to`` as ``(height, width)``, checked."""
    if resize_to is None:
        return None
    size = (resize_to, resize_to) if isinstance(resize_to, (int, np.integer)) else resize_to
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                       for s in size)):
        raise ValueError(
            f"resize_to must be a positive int or (height, width) of positive ints, got "
            f"{resize_to!r}"
        )
    return int(size[0]), int(size[1])


def _subset(available, wanted, param, split, name, rng) -> np.ndarray:
    """``wanted`` random indices out of ``available``; more than there are is an error."""
    if wanted > available:
        raise ValueError(
            f"{param}={wanted:,} but dataset {name!r} has only {available:,} {split} images: "
            f"use {param}={available:,} or fewer (0 = all)"
        )
    return rng.permutation(available)[:wanted]


def _take(images, keep):
    """The images at ``keep``: arrays are indexed, image files listed (decoded later)."""
    if isinstance(images, image_folder.ImageFiles):
        return images.take(keep)
    return images[keep]


def _list_image_folder(name, test_split):
    """An image folder's train and test ``ImageFiles`` and class names; prints what it skips."""
    train, test, class_names, skipped = image_folder.list_image_folder(name, test_split)
    if skipped:
        print(image_folder.describe_skipped(name, skipped))
    return train, test, class_names


def _decode_both(train, test, size):
    """Decode train and test images together: one size check, one progress count."""
    both = image_folder.ImageFiles(train.source, train.paths + test.paths,
                                   np.concatenate([train.labels, test.labels]))
    images = image_folder.decode(both, size)
    return images[:len(train)], images[len(train):]


def _load_keras_dataset(name):
    import keras

    loader = getattr(keras.datasets, name).load_data
    try:
        (x_train, y_train), (x_test, y_test) = loader()
    except Exception as error:  # urllib, SSL and socket errors all end here
        raise DatasetUnavailableError(
            f"could not download {name!r} and it is not in the Keras cache "
            f"({type(error).__name__}: {_first_line(error)}). Without a network, "
            f"use dataset={OFFLINE_DATASET!r} (real handwritten digits shipped with "
            "scikit-learn), the path of a local .npz file with "
            "x_train, y_train, x_test, y_test, or the path of an image folder."
        ) from None
    class_names = CIFAR10_CLASSES if name == "cifar10" else CIFAR100_CLASSES
    return (
        x_train.astype(np.uint8),
        y_train.reshape(-1).astype(np.int32),
        x_test.astype(np.uint8),
        y_test.reshape(-1).astype(np.int32),
        class_names,
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else "no details"


def _load_digits():
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as 32x32x3 uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) * (255.0 / 16.0)
    images = upsample_bilinear(images, factor=4)
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    images = np.repeat(images[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int32)

    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(images))
    test, train = order[:_DIGITS_TEST_SIZE], order[_DIGITS_TEST_SIZE:]
    class_names = [str(d) for d in range(10)]
    return images[train], labels[train], images[test], labels[test], class_names


def upsample_bilinear(images: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of ``(n, h, w)`` images by an integer factor.

    Pixel centres are aligned as in ``keras.ops.image.resize`` (half-pixel
    convention), with edge values held at the borders.
    """
    _, height, width = images.shape

    def axis_weights(size):
        centres = (np.arange(size * factor) + 0.5) / factor - 0.5
        centres = np.clip(centres, 0, size - 1)
        low = np.floor(centres).astype(int)
        high = np.minimum(low + 1, size - 1)
        return low, high, centres - low

    r0, r1, rw = axis_weights(height)
    c0, c1, cw = axis_weights(width)
    rows = images[:, r0, :] * (1 - rw)[None, :, None] + images[:, r1, :] * rw[None, :, None]
    return rows[:, :, c0] * (1 - cw)[None, None, :] + rows[:, :, c1] * cw[None, None, :]


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _load_npz(path):
    if not os.path.isfile(path):
        raise ValueError(f"dataset {path!r}: no such .npz file")
    arrays, names = _read_npz(path)

    images = {}
    labels = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        images[split] = _as_rgb_uint8(x, f"x_{split}", path)
        labels[split] = _as_labels(y, f"y_{split}", path)
        if len(images[split]) != len(labels[split]):
            raise ValueError(
                f"dataset {path!r}: x_{split} has {len(images[split])} images but "
                f"y_{split} has {len(labels[split])} labels"
            )
    if images["train"].shape[1:] != images["test"].shape[1:]:
        raise ValueError(
            f"dataset {path!r}: train images {images['train'].shape[1:]} and test "
            f"images {images['test'].shape[1:]} differ in shape"
        )

    num_classes = int(max(labels["train"].max(), labels["test"].max())) + 1
    if names is None:
        class_names = [str(i) for i in range(num_classes)]
    else:
        class_names = [str(n) for n in names.reshape(-1)]
        if len(class_names) < num_classes:
            raise ValueError(
                f"dataset {path!r}: {len(class_names)} class_names but labels go up "
                f"to {num_classes - 1}"
            )
    return images["train"], labels["train"], images["test"], labels["test"], class_names


def _read_npz(path):
    """The four arrays and the class names (or None) of a dataset ``.npz``.

    A file that is no readable ``.npz`` (empty, truncated, not a zip, a plain
    ``.npy``, object arrays) fails with a ``ValueError`` naming the path and
    NumPy's reason.
    """
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in NPZ_KEYS if key in archive.files}
            names = archive["class_names"] if "class_names" in archive.files else None
    except (OSError, EOFError, ValueError, TypeError, zipfile.BadZipFile,
            zlib.error) as error:
        # TypeError: a plain .npy loads as one array, which is no archive.
        raise _unreadable_npz(path, error) from None
    missing = [key for key in NPZ_KEYS if key not in arrays]
    if missing:
        raise ValueError(
            f"dataset {path!r} lacks the array(s) {', '.join(missing)}; a dataset "
            f".npz needs {', '.join(NPZ_KEYS)} (and optionally class_names)"
        )
    return arrays, names


def _unreadable_npz(path, error) -> ValueError:
    return ValueError(
        f"dataset {path!r} is not a readable .npz file ({type(error).__name__}: "
        f"{_first_line(error)}); save one with numpy.savez(path, x_train=..., y_train=..., "
        "x_test=..., y_test=...)"
    )


def _as_rgb_uint8(x, key, path):
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"dataset {path!r}: {key} must have shape (n, height, width[, 1 or 3]), "
            f"got {x.shape}"
        )
    if x.dtype != np.uint8:
        raise ValueError(
            f"dataset {path!r}: {key} must be uint8 pixels in [0, 255], got dtype {x.dtype}"
        )
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


def _as_labels(y, key, path):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"dataset {path!r}: {key} must be a vector of integer class labels, "
            f"got dtype {y.dtype} and shape {y.shape}"
        )
    if len(y) and y.min() < 0:
        raise ValueError(f"dataset {path!r}: {key} has negative labels (min {y.min()})")
    return y.astype(np.int32)
