"""Tiny-ImageNet (200 classes, 3x64x64) from the release layout under ``<root>/tiny-imagenet-200/``.

* train: ``train/<wnid>/images/*.JPEG`` (500 per class, 100,000 in all);
* test: the labelled validation set, ``val/images/*.JPEG`` with ``val/val_annotations.txt``
  (tab-separated ``file  wnid  x0 y0 x1 y1``; 10,000 images). The release's own ``test/`` has no labels,
  so the papers (fast-IBP, auto_LiRPA, ℓ∞-dist nets) report on ``val``, and so do we. A ``val`` already
  sorted into ``val/<wnid>/...`` class folders (fast-IBP's ``tinyimagenet_download.sh``) works too.

Labels are the index of the wnid in *sorted* order, which is what torchvision's ``ImageFolder`` (used by all
three papers) assigns; ``wnids.txt`` lists them in another order and is not used. Grayscale JPEGs in the
release are converted to RGB.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from certcore.data.base import (
    DatasetFormatError,
    DatasetSpec,
    ImageFileDataset,
    missing_files_error,
)
from certcore.data.formats import read_image

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
HOW_TO_GET = f"pass --download (download=True) to fetch {URL}, or unzip tiny-imagenet-200.zip into the root"


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def classes(root: Path) -> list[str]:
    train = root / FOLDER / "train"
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    if not wnids:
        raise missing_files_error(
            "Tiny-ImageNet", "train", root, [train / "<wnid>" / "images" / "*.JPEG"], HOW_TO_GET
        )
    return wnids


def index(root: Path, split: str) -> tuple[list[Path], torch.Tensor, list[str]]:
    """``(image paths, labels, wnids)`` of a split, without decoding any image."""
    base = root / FOLDER
    wnids = classes(root)
    label_of = {w: i for i, w in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            files = _images_under(base / "train" / w)
            paths += files
            labels += [label_of[w]] * len(files)
        if not paths:
            raise missing_files_error(
                "Tiny-ImageNet", split, root, [base / "train" / "<wnid>" / "images" / "*.JPEG"], HOW_TO_GET
            )
    else:
        val = base / "val"
        annotations = val / "val_annotations.txt"
        if annotations.is_file():
            for lineno, line in enumerate(annotations.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 2 or fields[1] not in label_of:
                    raise DatasetFormatError(
                        f"{annotations}:{lineno}: expected 'file<TAB>wnid<TAB>box', with a wnid among "
                        f"train/'s {len(wnids)} classes; got {line!r}"
                    )
                path = val / "images" / fields[0]
                if not path.is_file():
                    raise missing_files_error("Tiny-ImageNet", split, root, [path], HOW_TO_GET)
                paths.append(path)
                labels.append(label_of[fields[1]])
        elif val.is_dir() and any((val / w).is_dir() for w in wnids):  # val sorted into class folders
            for w in wnids:
                files = _images_under(val / w) if (val / w).is_dir() else []
                paths += files
                labels += [label_of[w]] * len(files)
        if not paths:
            raise missing_files_error(
                "Tiny-ImageNet", split, root, [val / "images" / "*.JPEG", annotations], HOW_TO_GET
            )
    return paths, torch.tensor(labels, dtype=torch.int64), wnids


def read(path: Path) -> torch.Tensor:
    img = read_image(path)
    if img.shape != (3, 64, 64):
        raise DatasetFormatError(
            f"{path}: expected a 64x64 Tiny-ImageNet image, got {img.shape[2]}x{img.shape[1]}"
        )
    return img


def load(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image of the split into one ``(N, 3, 64, 64)`` uint8 tensor (train: about 1.2 GB)."""
    paths, labels, _ = index(root, split)
    x = torch.empty((len(paths), 3, 64, 64), dtype=torch.uint8)

    def fill(i: int) -> None:
        x[i] = read(paths[i])

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(len(paths))))
    return x, labels


def make_dataset(root: Path, split: str, transform) -> ImageFileDataset:
    paths, labels, wnids = index(root, split)
    return ImageFileDataset(paths, labels, read, transform, classes=wnids)


def download(root: Path, split: str) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    download_and_extract_archive(URL, download_root=str(root), md5=MD5)


SPEC = DatasetSpec(
    name="tinyimagenet",
    channels=3,
    image_size=64,
    num_classes=200,
    split_sizes={"train": 100000, "test": 10000},
    load=load,
    folder=FOLDER,
    download=download,
    make_dataset=make_dataset,
    description="Tiny-ImageNet, 3x64x64, 200 classes; test = the labelled val split",
)
