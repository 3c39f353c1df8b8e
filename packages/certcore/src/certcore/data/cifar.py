"""CIFAR-10 from torchvision's layout: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}``.

The pickle batches are read by :func:`certcore.data.formats.read_cifar_batch`, without torchvision's MD5
check of the batch files, so locally verified copies and small synthetic batches load too. ``--download``
goes through torchvision (which downloads ``cifar-10-python.tar.gz``, checks its MD5 and unpacks it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from certcore.data.base import DatasetFormatError, DatasetSpec, missing_files_error
from certcore.data.formats import CIFAR_TEST_BATCHES, CIFAR_TRAIN_BATCHES, read_cifar_batch

FOLDER = "cifar-10-batches-py"
FILES = {"train": CIFAR_TRAIN_BATCHES, "test": CIFAR_TEST_BATCHES}
HOW_TO_GET = (
    "pass --download (download=True) to fetch cifar-10-python.tar.gz with torchvision, "
    "or unpack that archive (https://www.cs.toronto.edu/~kriz/cifar.html) into the root"
)


def load(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    folder = root / FOLDER
    paths = [folder / name for name in FILES[split]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise missing_files_error("CIFAR-10", split, root, missing, HOW_TO_GET)
    parts = [read_cifar_batch(p) for p in paths]
    images = np.concatenate([x for x, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetFormatError(
            f"{folder}: CIFAR-10 labels must be 0..9, found {labels.min()}..{labels.max()}"
        )
    return torch.from_numpy(images), torch.from_numpy(labels)


def download(root: Path, split: str) -> None:
    from torchvision.datasets import CIFAR10

    root.mkdir(parents=True, exist_ok=True)
    CIFAR10(str(root), train=(split == "train"), download=True)


SPEC = DatasetSpec(
    name="cifar10",
    channels=3,
    image_size=32,
    num_classes=10,
    split_sizes={"train": 50000, "test": 10000},
    load=load,
    folder=FOLDER,
    download=download,
    description="CIFAR-10, 3x32x32, 10 classes (torchvision layout, python pickle batches)",
)
