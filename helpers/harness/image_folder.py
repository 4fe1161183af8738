"""Image folders as datasets: one folder of images per class, in a folder or a ``.zip``.

The layout that torchvision's ``ImageFolder`` and Keras's
``image_dataset_from_directory`` read, in one of two forms:

* ``train/`` and ``test/`` folders, each holding one folder per class
  (``train/cat/001.png``, ``test/cat/104.jpg``): the split is the folder's own;
* class folders only (``cat/001.png``, ``dog/002.png``): a fixed test split is
  taken from every class (``test_split``), the same whatever the run's seed.

Either may sit in a ``.zip``, read without unpacking it to disk, and either
may be wrapped in one top-level folder (``cifar10/train/...``). Class names are
the class folders' names, sorted: a class's label is its index in that order.
Images may lie deeper inside their class folder.

The train and test images come in a shuffled order, not class by class: a
listing sorts the files, so every class would otherwise sit in one block and
the first images of a split would all be of class 0. The shuffle is drawn
with ``ORDER_SEED``, a constant of the dataset, not the run's seed: every run
sees the same order, and the same test images under a subset of a given seed
(``load_dataset``'s ``n_test`` draws positions in this order). A folder and a
``.zip`` of it list the same files and come in the same order.

An image is a file whose extension is one of ``IMAGE_EXTENSIONS`` (any case);
every other file, and everything hidden (``.DS_Store``, ``.ipynb_checkpoints/``,
a zip's ``__MACOSX/``), is skipped and counted. Listing reads no image:
``list_image_folder`` gives ``ImageFiles`` (paths and labels), and ``decode``
turns the ones a run keeps into ``uint8`` arrays ``(n, height, width, 3)``:
greyscale, palette and CMYK images become RGB, an alpha channel is dropped
(as torchvision's and Keras's loaders do). Every error is one ``ValueError``
that names the dataset and the folder or file at fault. Used by
``helpers.harness.data``.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

# What Pillow reads in every build (torchvision's list, with GIF).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff",
                    ".webp")
# The test split of a folder of class folders is drawn with this seed (and the
# class's name), not the run's: every run is evaluated on the same images.
SPLIT_SEED = 0
# The train and test images are shuffled with this seed (and the split's
# name), not the run's: a split's order is the same in every run.
ORDER_SEED = 0
# A load of more images than this prints its progress every so many images.
PROGRESS_EVERY = 10_000
_MACOS_FOLDER = "__MACOSX"  # what macOS adds to the zips it makes


@dataclasses.dataclass
class Source:
    """A folder or a ``.zip``, listed once: its files and folders as relative POSIX paths."""

    path: str
    folders: set[str]
    files: list[str]  # sorted, so the files under one folder are contiguous
    is_zip: bool

    def where(self, relative: str) -> str:
        """A file or folder of the source as the messages name it (``data.zip/cat/1.png``)."""
        return f"{self.path.rstrip('/')}/{relative}" if relative else self.path

    def subfolders(self, folder: str) -> list[str]:
        """The names of ``folder``'s visible sub-folders, sorted."""
        prefix = f"{folder}/" if folder else ""
        names = {f[len(prefix):] for f in self.folders if f.startswith(prefix) and f != folder}
        return sorted(n for n in names if n and "/" not in n and not _hidden(n))

    def files_under(self, folder: str) -> list[str]:
        """Every file below ``folder``, at any depth (sorted)."""
        prefix = f"{folder}/" if folder else ""
        start = bisect.bisect_left(self.files, prefix)
        end = bisect.bisect_left(self.files, prefix[:-1] + chr(ord("/") + 1)) if prefix else None
        return self.files[start:end]

    def images_in(self, folder: str) -> list[str]:
        """The images directly in ``folder`` (not in its sub-folders)."""
        prefix = f"{folder}/" if folder else ""
        return [f for f in self.files_under(folder) if "/" not in f[len(prefix):] and is_image(f)]

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[str], bytes]]:
        """A function that reads one file's bytes, valid inside the ``with`` block."""
        if self.is_zip:
            with zipfile.ZipFile(self.path) as archive:
                yield archive.read
        else:
            def read(relative):
                with open(os.path.join(self.path, relative), "rb") as file:
                    return file.read()
            yield read


@dataclasses.dataclass
class ImageFiles:
    """The image files of one split with their labels, listed but not decoded."""

    source: Source
    paths: list[str]
    labels: np.ndarray  # int32, one per path

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices: Sequence[int]) -> ImageFiles:
        """The files at ``indices``, in that order."""
        return ImageFiles(self.source, [self.paths[i] for i in indices],
                          self.labels[np.asarray(indices, dtype=int)])


def is_image(relative: str) -> bool:
    """Whether a file is read as an image: a known extension, nothing hidden on its path."""
    return relative.lower().endswith(IMAGE_EXTENSIONS) and not _hidden(relative)


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") or part == _MACOS_FOLDER for part in relative.split("/"))


def open_source(path: str) -> Source:
    """List the folder or ``.zip`` at ``path`` (reading no image)."""
    if os.path.isdir(path):
        folders, files = _list_folder(path)
        return Source(path, folders, files, is_zip=False)
    if not os.path.isfile(path):
        raise ValueError(f"dataset {path!r}: no such image folder or .zip file")
    try:
        folders, files = _list_zip(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"dataset {path!r} is not a readable .zip file ({error})") from None
    return Source(path, folders, files, is_zip=True)


def _list_folder(path: str) -> tuple[set[str], list[str]]:
    folders, files = {""}, []
    for here, subfolders, names in os.walk(path, followlinks=True):
        relative = os.path.relpath(here, path).replace(os.sep, "/")
        relative = "" if relative == "." else relative
        folders.update(_join(relative, name) for name in subfolders)
        files.extend(_join(relative, name) for name in names)
    return folders, sorted(files)


def _list_zip(path: str) -> tuple[set[str], list[str]]:
    folders, files = {""}, []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.rstrip("/")
            (folders.add if info.is_dir() else files.append)(name)
            parts = name.split("/")
            folders.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
    return folders, sorted(files)


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def list_image_folder(path: str, test_split: float = 0.2, shuffle: bool = True):
    """The train and test ``ImageFiles``, class names and skipped files of an image folder.

    Returns ``(train, test, class_names, skipped)``; ``skipped`` lists the files
    that are not images of a class folder. ``test_split`` is the fraction of
    each class held out for testing when the folder has no ``train/`` and
    ``test/`` folders. With ``shuffle`` (the default) each split comes in the
    fixed shuffled order of ``ORDER_SEED``; without it, class by class, each
    class's files sorted by path.
    """
    source = open_source(path)
    root = _dataset_root(source)
    if {"train", "test"} <= set(source.subfolders(root)):
        train_classes = _class_files(source, _join(root, "train"))
        test_classes = _class_files(source, _join(root, "test"))
        _same_classes(source, train_classes, test_classes)
    else:
        _no_lone_split_folder(source, root)
        train_classes, test_classes = _split_each_class(source, _class_files(source, root),
                                                        test_split)
    class_names = list(train_classes)
    train = _labelled(source, train_classes)
    test = _labelled(source, test_classes)
    used = set(train.paths) | set(test.paths)
    skipped = [f for f in source.files if f not in used]
    if shuffle:
        train, test = _shuffled(train, "train"), _shuffled(test, "test")
    return train, test, class_names, skipped


def _shuffled(files: ImageFiles, split: str) -> ImageFiles:
    """``files`` in the fixed order that ``ORDER_SEED`` and the split's name give."""
    rng = np.random.default_rng([ORDER_SEED, zlib.crc32(split.encode())])
    return files.take(rng.permutation(len(files)))


def _dataset_root(source: Source) -> str:
    """The folder that holds the layout: the top, or the one folder that wraps it."""
    root = ""
    while True:
        subfolders = source.subfolders(root)
        if {"train", "test"} <= set(subfolders) or len(subfolders) != 1:
            return root
        inner = _join(root, subfolders[0])
        if source.images_in(root) or source.images_in(inner) or not source.subfolders(inner):
            return root  # the one folder is a class folder
        root = inner


SPLIT_FOLDERS = ("train", "test", "val", "validation")


def _no_lone_split_folder(source: Source, root: str) -> None:
    """Fail on ``train/`` without ``test/`` (or the reverse), which would read as classes.

    A folder of that name that holds images is a class (CIFAR-100 has a class
    ``train``); one that holds only folders is a split.
    """
    for name in source.subfolders(root):
        folder = _join(root, name)
        if name in SPLIT_FOLDERS and not source.images_in(folder) and source.subfolders(folder):
            raise ValueError(
                f"dataset {source.path!r}: {source.where(folder)} looks like a split, not a "
                "class: an image folder holds train/ and test/ folders of class folders, or "
                "class folders only"
            )


def _class_files(source: Source, folder: str) -> dict[str, list[str]]:
    """``{class name: its images}`` of the class folders in ``folder``, classes sorted."""
    classes = source.subfolders(folder)
    if not classes:
        raise ValueError(
            f"dataset {source.path!r}: {source.where(folder)} has no class folders; an image "
            "folder holds one folder of images per class, or train/ and test/ folders of them"
        )
    files = {}
    for name in classes:
        images = [f for f in source.files_under(_join(folder, name)) if is_image(f)]
        if not images:
            raise ValueError(
                f"dataset {source.path!r}: class folder {source.where(_join(folder, name))} "
                f"has no images (extensions read: {', '.join(IMAGE_EXTENSIONS)})"
            )
        files[name] = images
    return files


def _same_classes(source: Source, train: dict, test: dict) -> None:
    """Fail, naming the classes that differ, unless train and test have the same classes."""
    only_train = sorted(set(train) - set(test))
    only_test = sorted(set(test) - set(train))
    if only_train or only_test:
        sides = [f"only in train: {', '.join(only_train)}" if only_train else "",
                 f"only in test: {', '.join(only_test)}" if only_test else ""]
        raise ValueError(
            f"dataset {source.path!r}: train and test have different classes ("
            + "; ".join(side for side in sides if side) + ")"
        )


def _split_each_class(source: Source, classes: dict[str, list[str]], test_split: float):
    """Hold out ``test_split`` of each class's images (rounded; at least one on each side).

    Each class is shuffled with a seed of its own (``SPLIT_SEED`` and the
    class name), so adding a class or another run's seed moves no image.
    """
    train, test = {}, {}
    for name, files in classes.items():
        if len(files) < 2:
            raise ValueError(
                f"dataset {source.path!r}: class {name} has {len(files)} image; a folder of "
                "class folders is split into train and test, which needs 2 or more per class"
            )
        n_test = min(max(int(len(files) * test_split + 0.5), 1), len(files) - 1)
        order = np.random.default_rng([SPLIT_SEED, zlib.crc32(name.encode())]).permutation(
            len(files))
        held_out = set(order[:n_test].tolist())
        test[name] = [f for i, f in enumerate(files) if i in held_out]
        train[name] = [f for i, f in enumerate(files) if i not in held_out]
    return train, test


def _labelled(source: Source, classes: dict[str, list[str]]) -> ImageFiles:
    """All images of ``classes`` in one list, labelled by each class's index."""
    paths = [f for files in classes.values() for f in files]
    labels = np.repeat(np.arange(len(classes), dtype=np.int32),
                       [len(files) for files in classes.values()])
    return ImageFiles(source, paths, labels)


def describe_skipped(path: str, skipped: Sequence[str], shown: int = 3) -> str:
    """One line that counts the skipped files and names a few."""
    examples = ", ".join(skipped[:shown]) + (", ..." if len(skipped) > shown else "")
    return (f"{path}: skipped {len(skipped):,} file(s) that are not images in a class folder "
            f"({examples})")


def decode(files: ImageFiles, resize_to: tuple[int, int] | None = None,
           progress: Callable[[str], None] | None = print) -> np.ndarray:
    """The images of ``files`` as ``uint8`` RGB, shape ``(n, height, width, 3)``.

    Without ``resize_to`` every image must have the size of the first one;
    with ``(height, width)`` each is resized to it (bilinear, Pillow's, which
    averages over the source pixels when it shrinks). A load of more than
    ``PROGRESS_EVERY`` images reports its progress through ``progress``.
    """
    source, paths = files.source, files.paths
    report = progress if progress is not None and len(paths) > PROGRESS_EVERY else None
    if report:
        report(f"{source.path}: decoding {len(paths):,} images")
    with source.reader() as read:
        images = None
        for index, path in enumerate(paths):
            image = _decode_one(source, path, read(path), resize_to)
            if images is None:
                images = np.empty((len(paths), *image.shape), np.uint8)
            elif image.shape != images.shape[1:]:
                raise ValueError(_sizes_differ(source, paths[0], images.shape, path, image.shape))
            images[index] = image
            if report and (index + 1) % PROGRESS_EVERY == 0:
                report(f"{source.path}: {index + 1:,} / {len(paths):,} images decoded")
    return images if images is not None else np.empty((0, 0, 0, 3), np.uint8)


def _decode_one(source: Source, path: str, data: bytes, resize_to) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 (only image folders need Pillow)

    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except Exception as error:  # noqa: BLE001 (a corrupt file raises any of a dozen types)
        raise ValueError(
            f"dataset {source.path!r}: cannot read the image {source.where(path)} "
            f"({type(error).__name__}: {error})"
        ) from None
    if resize_to is not None and image.size != (resize_to[1], resize_to[0]):
        image = image.resize((resize_to[1], resize_to[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _sizes_differ(source, first, first_shape, other, other_shape) -> str:
    def size(shape):
        return f"{shape[-3]}x{shape[-2]}"

    return (
        f"dataset {source.path!r}: images differ in size: {source.where(first)} is "
        f"{size(first_shape)} and {source.where(other)} is {size(other_shape)} (height x width); "
        "pass resize_to=(height, width) to load_dataset to resize every image"
    )


def peek(path: str, test_split: float = 0.2, resize_to: tuple[int, int] | None = None):
    """``(image_shape, num_classes)`` of an image folder from its listing and one image
    (the first training image by path)."""
    train, _, class_names, _ = list_image_folder(path, test_split, shuffle=False)
    first = decode(train.take([0]), resize_to, progress=None)
    return tuple(first.shape[1:]), len(class_names)
