"""MNIST from torchvision's layout: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

Both the uncompressed files (what torchvision unpacks) and the ``.gz`` originals (what ``shared/data`` holds)
are read directly, without unpacking anything to disk; the uncompressed file wins when both exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from certcore.data.base import DatasetFormatError, DatasetSpec, missing_files_error
from certcore.data.formats import read_idx

FOLDER = "MNIST/raw"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "pass --download (download=True) to fetch it with torchvision, or copy the four official .gz files "
    "(e.g. from shared/data/MNIST/raw) into that folder"
)


def find_file(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    raw = root / FOLDER
    found = [find_file(raw, stem) for stem in FILES[split]]
    if any(p is None for p in found):
        missing = [raw / f"{stem}[.gz]" for stem, p in zip(FILES[split], found) if p is None]
        raise missing_files_error("MNIST", split, root, missing, HOW_TO_GET)
    images_path, labels_path = found
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetFormatError(
            f"{images_path}: expected uint8 IDX3 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(
            f"{labels_path}: expected {images.shape[0]} labels (IDX1, one per image), "
            f"got shape {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28) uint8
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def download(root: Path, split: str) -> None:
    from torchvision.datasets import MNIST

    root.mkdir(parents=True, exist_ok=True)
    MNIST(str(root), train=(split == "train"), download=True)


SPEC = DatasetSpec(
    name="mnist",
    channels=1,
    image_size=28,
    num_classes=10,
    split_sizes={"train": 60000, "test": 10000},
    load=load,
    folder=FOLDER,
    download=download,
    description="MNIST handwritten digits, 1x28x28, 10 classes (torchvision layout, IDX files)",
)
