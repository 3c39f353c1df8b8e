"""Readers and writers for the on-disk formats: IDX (MNIST), CIFAR-10 pickle batches, Tiny-ImageNet folders,
downsampled-ImageNet batches (npz or pickle).

The readers are the only implementation of each format in certcore; the dataset modules call them. The
writers produce small datasets in the *real* layouts (used by the tests and by anyone who needs a tiny
offline dataset), e.g. ``write_fake_dataset("mnist", tmp_path, n_train=20, n_test=10)``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from certcore.data.base import DatasetFormatError

# --- IDX (http://yann.lecun.com/exdb/mnist/ "FILE FORMATS") ---------------------------------------------

# IDX type codes → big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09}


def _open(path: Path, mode: str = "rb"):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into a numpy array with its native shape."""
    path = Path(path)
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DatasetFormatError(f"{path}: cannot read IDX file ({err})") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{path}: IDX header truncated (expected {ndim} dimension sizes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise DatasetFormatError(
            f"{path}: IDX header says shape {shape} ({count * dtype.itemsize} bytes of data), "
            f"file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` (uint8 or int8) as an IDX file; gzip-compressed when ``path`` ends in ``.gz``."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    if array.dtype not in _IDX_CODES:
        raise ValueError(f"write_idx supports uint8/int8 arrays, got {array.dtype}")
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


# --- CIFAR-10 python batches (https://www.cs.toronto.edu/~kriz/cifar.html) ------------------------------

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCHES = ("test_batch",)


def _str_keys(obj: dict) -> dict:
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch → ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``.

    No MD5 check (torchvision's ``CIFAR10`` refuses any file whose MD5 differs from the official one);
    the shapes are checked instead. The files are pickles: load only files you trust.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            entry = _str_keys(pickle.load(f, encoding="latin1"))
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as err:
        raise DatasetFormatError(f"{path}: cannot unpickle CIFAR batch ({err})") from err
    labels_key = "labels" if "labels" in entry else "fine_labels"
    if "data" not in entry or labels_key not in entry:
        raise DatasetFormatError(f"{path}: CIFAR batch needs keys 'data' and 'labels', got {sorted(entry)}")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[labels_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(
            f"{path}: CIFAR 'data' must be uint8 of shape (N, 3072), got {data.dtype} {tuple(data.shape)}"
        )
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32), labels


def write_cifar_batch(
    path: str | os.PathLike[str], images: np.ndarray, labels: Sequence[int], batch_label: str = "fake batch"
) -> Path:
    """Write ``images`` (N, 3, 32, 32) uint8 and ``labels`` as a CIFAR-10 python batch."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != (3, 32, 32):
        raise ValueError(f"CIFAR images must be uint8 (N, 3, 32, 32), got {images.dtype} {images.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "batch_label": batch_label,
        "labels": [int(v) for v in labels],
        "data": images.reshape(len(images), 3 * 32 * 32),
        "filenames": [f"img_{i}.png" for i in range(len(images))],
    }
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)
    return path


def write_cifar_meta(folder: str | os.PathLike[str], label_names: Sequence[str]) -> Path:
    path = Path(folder) / "batches.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(
            {"label_names": list(label_names), "num_cases_per_batch": 10000, "num_vis": 3072}, f, protocol=2
        )
    return path


# --- Downsampled ImageNet (Chrabaszcz et al. 2017, https://patrykchrabaszcz.github.io/Imagenet32/) --------
#
# The release (image-net.org "Download downsampled images") ships, per size, ten training files
# ``train_data_batch_1`` … ``train_data_batch_10`` and one ``val_data``, each a dict with ``data``: uint8
# (N, 3·S·S), one image a row, channel-major (all S·S red values row by row, then green, then blue), and
# ``labels``: the 1-based class ids 1..1000 (the order of the authors' ``map_clsloc.txt``); the training
# pickles also hold ``mean``, the mean training row. The pickled release comes from the authors'
# Imagenet32_Scripts (``image2numpy_imagenet_{train,val}.py``: ``pickle.dump`` of that dict); the npz release
# (``Imagenet64_train_part1_npz.zip``, ``…_part2_npz.zip``, ``Imagenet64_val_npz.zip``, read by
# tensorflow_datasets' ``imagenet_resized`` with ``np.load(allow_pickle=False)``) holds the same arrays.

IMAGENET64_SIZE = 64
IMAGENET64_TRAIN_BATCHES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
IMAGENET64_TEST_BATCHES = ("val_data",)


def read_imagenet64_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one downsampled-ImageNet 64×64 batch → ``(images (N, 3, 64, 64) uint8, labels (N,) int64)``.

    The labels are returned as stored, 1-based. An ``.npz`` file (told by its zip signature, whatever its
    name) is read with ``np.load(allow_pickle=False)``; anything else is unpickled — load only pickles you
    trust.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with np.load(path, allow_pickle=False) as npz:
                entry = {key: npz[key] for key in npz.files if key in ("data", "labels")}
        else:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, zipfile.BadZipFile) as err:
        raise DatasetFormatError(
            f"{path}: cannot read a downsampled-ImageNet batch (npz or pickle): {err}"
        ) from err
    what = sorted(map(str, entry)) if isinstance(entry, dict) else f"a {type(entry).__name__}"
    entry = _str_keys(entry) if isinstance(entry, dict) else {}
    if "data" not in entry or "labels" not in entry:
        raise DatasetFormatError(
            f"{path}: a downsampled-ImageNet batch is a dict with 'data' and 'labels'; got {what}"
        )
    side = IMAGENET64_SIZE
    data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side * side:
        raise DatasetFormatError(
            f"{path}: 'data' must be uint8 of shape (N, {3 * side * side}) (3x{side}x{side} images), "
            f"got {data.dtype} {tuple(data.shape)}"
        )
    integers = labels.dtype.kind in "iu" or labels.size == 0
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not integers:
        raise DatasetFormatError(
            f"{path}: 'labels' must be {data.shape[0]} integer class ids (one per image), "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    return data.reshape(-1, 3, side, side), labels.astype(np.int64)


def write_imagenet64_batch(
    path: str | os.PathLike[str],
    images: np.ndarray,
    labels: Sequence[int],
    *,
    kind: str = "npz",
    mean: np.ndarray | None = None,
) -> Path:
    """Write ``images`` (N, 3, 64, 64) uint8 and 1-based ``labels`` as one release batch file.

    ``kind="npz"``: ``np.savez`` to ``path`` (the npz release names its files ``<stem>.npz``);
    ``"pickle"``: a pickled dict, as the authors' scripts write. ``mean`` (the training batches' mean row) is
    stored when given.
    """
    side = IMAGENET64_SIZE
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != (3, side, side):
        raise ValueError(f"images must be uint8 (N, 3, {side}, {side}), got {images.dtype} {images.shape}")
    if kind not in ("npz", "pickle"):
        raise ValueError(f"kind must be 'npz' or 'pickle', got {kind!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"data": images.reshape(len(images), 3 * side * side), "labels": [int(v) for v in labels]}
    if mean is not None:
        entry["mean"] = np.asarray(mean)
    if kind == "npz":
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to a bare name
            np.savez(f, **{k: np.asarray(v) for k, v in entry.items()})
    else:
        with open(path, "wb") as f:
            pickle.dump(entry, f, protocol=4)
    return path


# --- image files (Tiny-ImageNet) -------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode an image file to an RGB uint8 tensor ``(3, H, W)`` (grayscale JPEGs are converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetFormatError(f"{path}: cannot decode image ({err})") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a ``(3, H, W)`` uint8 array as an image; the format follows the suffix (.JPEG, .png)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpeg", ".jpg") else None
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(np.asarray(image).transpose(1, 2, 0))).save(
        path, format=fmt, **kwargs
    )
    return path


# --- fake datasets in the real layouts -------------------------------------------------------------------


def _fake_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_fake_mnist(
    root: str | os.PathLike[str],
    n_train: int = 20,
    n_test: int = 10,
    *,
    compressed: bool = True,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write random MNIST-shaped IDX files to ``<root>/MNIST/raw/`` (``.gz`` or uncompressed).

    Returns ``{"train": (images (N, 28, 28) uint8, labels (N,) uint8), "test": ...}``.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    suffix = ".gz" if compressed else ""
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = _fake_images(rng, n, (28, 28))
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        out[split] = (images, labels)
    return out


def write_fake_cifar10(
    root: str | os.PathLike[str], n_train: int = 20, n_test: int = 10, *, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write random CIFAR-10 batches to ``<root>/cifar-10-batches-py/`` (train split over the 5 batches)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    out = {}
    for split, names, n in (("train", CIFAR_TRAIN_BATCHES, n_train), ("test", CIFAR_TEST_BATCHES, n_test)):
        images = _fake_images(rng, n, (3, 32, 32))
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        for name, idx in zip(names, np.array_split(np.arange(n), len(names))):
            write_cifar_batch(folder / name, images[idx], labels[idx], batch_label=name)
        out[split] = (images, labels)
    write_cifar_meta(
        folder, ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    return out


def write_fake_tinyimagenet(
    root: str | os.PathLike[str],
    n_classes: int = 3,
    n_train_per_class: int = 2,
    n_val: int = 4,
    *,
    image_format: str = "png",
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a small Tiny-ImageNet in its release layout under ``<root>/tiny-imagenet-200/``.

    ``train/<wnid>/images/<wnid>_<i>.<ext>`` (+ the ``<wnid>_boxes.txt`` files the release has),
    ``val/images/val_<i>.<ext>``, ``val/val_annotations.txt`` (tab-separated: file, wnid, box) and
    ``wnids.txt``. ``image_format="png"`` keeps the pixels exact; ``"JPEG"`` is what the release uses.
    Returns the pixels and labels (label = index of the wnid in sorted order, as ImageFolder assigns).
    """
    rng = np.random.default_rng(seed)
    ext = "JPEG" if image_format.lower() in ("jpeg", "jpg") else "png"
    base = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{1000000 + 7919 * (i + 1):08d}" for i in range(n_classes)][::-1]  # not in sorted order
    order = {w: i for i, w in enumerate(sorted(wnids))}
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    train_x, train_y = [], []
    for w in wnids:
        lines = []
        for i in range(n_train_per_class):
            img = _fake_images(rng, 1, (3, 64, 64))[0]
            write_image(base / "train" / w / "images" / f"{w}_{i}.{ext}", img)
            lines.append(f"{w}_{i}.{ext}\t0\t0\t63\t63\n")
            train_x.append(img)
            train_y.append(order[w])
        (base / "train" / w / f"{w}_boxes.txt").write_text("".join(lines))
    val_x, val_y, lines = [], [], []
    for i in range(n_val):
        w = wnids[i % n_classes]
        img = _fake_images(rng, 1, (3, 64, 64))[0]
        write_image(base / "val" / "images" / f"val_{i}.{ext}", img)
        lines.append(f"val_{i}.{ext}\t{w}\t0\t0\t63\t63\n")
        val_x.append(img)
        val_y.append(order[w])
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    return {"train": (np.stack(train_x), np.array(train_y)), "test": (np.stack(val_x), np.array(val_y))}


def write_fake_imagenet64(
    root: str | os.PathLike[str],
    n_train: int = 20,
    n_test: int = 4,
    *,
    n_train_batches: int = 10,
    kind: str = "npz",
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a small downsampled ImageNet 64×64 in its release format under ``<root>/imagenet64/``.

    ``train_data_batch_1`` … ``train_data_batch_<n_train_batches>`` (the train images split over them) and
    ``val_data``; ``kind="npz"`` names them ``<stem>.npz``, ``"pickle"`` leaves the bare names. Labels are
    stored 1-based (1..1000); the training batches carry the ``mean`` row. Returns the pixels and the
    *0-based* labels, which is what the loader gives.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "imagenet64"
    suffix = ".npz" if kind == "npz" else ""
    out = {}
    splits = (
        ("train", IMAGENET64_TRAIN_BATCHES[:n_train_batches], n_train),
        ("test", IMAGENET64_TEST_BATCHES, n_test),
    )
    for split, names, n in splits:
        images = _fake_images(rng, n, (3, IMAGENET64_SIZE, IMAGENET64_SIZE))
        labels = rng.integers(0, 1000, size=n).astype(np.int64)
        labels[:2] = np.array([0, 999])[: len(labels[:2])]  # the extreme classes: checks the 1-based shift
        mean = images.reshape(n, -1).mean(axis=0) if split == "train" else None
        for name, idx in zip(names, np.array_split(np.arange(n), len(names))):
            path = folder / f"{name}{suffix}"
            write_imagenet64_batch(path, images[idx], labels[idx] + 1, kind=kind, mean=mean)
        out[split] = (images, labels)
    return out


def write_fake_dataset(
    name: str, root: str | os.PathLike[str], **kwargs
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Dispatch to ``write_fake_{mnist,cifar10,tinyimagenet,imagenet64}``."""
    writers = {
        "mnist": write_fake_mnist,
        "cifar10": write_fake_cifar10,
        "tinyimagenet": write_fake_tinyimagenet,
        "imagenet64": write_fake_imagenet64,
    }
    if name not in writers:
        raise ValueError(f"no fake-data writer for {name!r}; expected one of {', '.join(writers)}")
    return writers[name](root, **kwargs)
