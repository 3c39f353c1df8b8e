"""Downsampled ImageNet 64×64 (1000 classes, 3x64x64) from its release files under ``<root>/imagenet64/``.

Chrabaszcz, Loshchilov & Hutter 2017, "A Downsampled Variant of ImageNet as an Alternative to the CIFAR
datasets" (arXiv:1707.08819): every ILSVRC-2012 image box-resized to 64×64, the same classes and images
(1,281,167 train, 50,000 val: the split sizes tensorflow_datasets' ``imagenet_resized/64x64`` lists). The
format (see :mod:`certcore.data.formats`): ``train_data_batch_1`` … ``train_data_batch_10`` and ``val_data``,
each a dict with ``data`` (N, 3·64·64) uint8, channel-major rows, and ``labels`` 1..1000. Sources: the
authors' scripts (PatrykChrabaszcz/Imagenet32_Scripts ``image2numpy_imagenet_{train,val}.py``, which pickle
that dict) and tensorflow_datasets ``imagenet_resized.py`` (which reads the ``*_npz.zip`` release with
``np.load`` and subtracts 1 from the labels).

* train: the ten ``train_data_batch_<i>`` files, in that order; test: ``val_data`` (the release has no
  labelled test set; auto_LiRPA's ``imagenet_training.py`` evaluates on it too).
* Either release works: the npz files (``train_data_batch_1.npz`` …, from ``Imagenet64_train_part1_npz.zip``,
  ``Imagenet64_train_part2_npz.zip`` and ``Imagenet64_val_npz.zip``) or the pickles (the same names without a
  suffix, from ``Imagenet64_train_part1.zip`` / ``…_part2.zip`` / ``Imagenet64_val.zip``). Each file is
  looked for in ``<root>/imagenet64/`` and then in its direct sub-folders (sorted), bare name before
  ``.npz``, so the zips can be unpacked there as they are.
* Labels: the stored 1-based ids minus 1, so 0..999 in the authors' class order (``map_clsloc.txt``), as
  tensorflow_datasets does. auto_LiRPA instead converts the npz files to PNG folders named ``0`` … ``999``
  (``examples/vision/data/ImageNet64/imagenet_data_loader.py``) and reads them with ``ImageFolder``, whose
  class index follows the *string* order of those names: a relabelling, one-to-one and the same for both
  splits, so errors and verified errors do not change.

Nothing is downloaded (image-net.org wants a login). :func:`load` holds a whole split in memory: the train
split is 1,281,167 × 12,288 bytes ≈ 15.7 GB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from certcore.data.base import DatasetFormatError, DatasetSpec, missing_files_error
from certcore.data.formats import (
    IMAGENET64_SIZE,
    IMAGENET64_TEST_BATCHES,
    IMAGENET64_TRAIN_BATCHES,
    read_imagenet64_batch,
)

FOLDER = "imagenet64"
FILES = {"train": IMAGENET64_TRAIN_BATCHES, "test": IMAGENET64_TEST_BATCHES}
NUM_CLASSES = 1000
HOW_TO_GET = (
    "--download cannot fetch it (image-net.org needs a login): download Imagenet64_train_part1_npz.zip, "
    "Imagenet64_train_part2_npz.zip and Imagenet64_val_npz.zip (or the pickled Imagenet64_train_part1.zip, "
    "Imagenet64_train_part2.zip, Imagenet64_val.zip) from https://image-net.org/download-images and unzip "
    "them into that folder"
)


def find_batch(folder: Path, stem: str) -> Path | None:
    """``folder/stem``, ``folder/stem.npz``, then the same in each direct sub-folder (sorted); else None."""
    places = [folder]
    if folder.is_dir():
        places += sorted(p for p in folder.iterdir() if p.is_dir())
    for place in places:
        for candidate in (place / stem, place / f"{stem}.npz"):
            if candidate.is_file():
                return candidate
    return None


def load(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of the split as one ``(N, 3, 64, 64)`` uint8 tensor, labels 0..999 as int64."""
    folder = root / FOLDER
    found = [find_batch(folder, stem) for stem in FILES[split]]
    missing = [folder / f"{stem}[.npz]" for stem, path in zip(FILES[split], found) if path is None]
    if missing:
        raise missing_files_error("ImageNet 64x64", split, root, missing, HOW_TO_GET)
    parts: list[tuple[np.ndarray, np.ndarray] | None] = []
    for path in found:
        images, labels = read_imagenet64_batch(path)
        if labels.size and (labels.min() < 1 or labels.max() > NUM_CLASSES):
            raise DatasetFormatError(
                f"{path}: downsampled-ImageNet labels are the 1-based class ids 1..{NUM_CLASSES}, found "
                f"{labels.min()}..{labels.max()} (a file re-saved with 0-based labels?)"
            )
        parts.append((images, labels))
    n = sum(len(part[1]) for part in parts)
    side = IMAGENET64_SIZE
    x = torch.empty((n, 3, side, side), dtype=torch.uint8)
    y = torch.empty((n,), dtype=torch.int64)
    offset = 0
    for i, (images, labels) in enumerate(parts):
        parts[i] = None  # free each batch once copied: the peak stays near one split plus one batch
        x[offset : offset + len(labels)] = torch.from_numpy(images)
        y[offset : offset + len(labels)] = torch.from_numpy(labels - 1)
        offset += len(labels)
    return x, y


SPEC = DatasetSpec(
    name="imagenet64",
    channels=3,
    image_size=IMAGENET64_SIZE,
    num_classes=NUM_CLASSES,
    split_sizes={"train": 1281167, "test": 50000},
    load=load,
    folder=FOLDER,
    download=None,
    description="downsampled ImageNet 64x64 (Chrabaszcz et al. 2017), 3x64x64, 1000 classes; test = val_data",
)
