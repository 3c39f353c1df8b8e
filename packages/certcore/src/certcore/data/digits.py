"""scikit-learn's bundled digits: 1,797 grayscale 8x8 images of 0..9, no files and no download needed.

* Pixels: sklearn stores 0..16; we divide by 16, so images are float32 in [0, 1] (17 levels).
* Split (fixed, seeded): ``sklearn.model_selection.train_test_split(test_size=0.2, random_state=0,
  stratify=labels)`` → 1,437 train / 360 test images, class proportions kept.
* Sizes: ``digits`` is the native 8x8; ``digits16`` and ``digits28`` are upsampled to 16x16 / 28x28 with
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)``. Bilinear
  interpolation is a convex combination of pixels, so values stay in [0, 1]. 28x28 lets MNIST-shaped models
  run on digits.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from certcore.data.base import DatasetSpec

SPLIT_SEED = 0
TEST_FRACTION = 0.2
SIZES = {"digits": 8, "digits16": 16, "digits28": 28}


@cache
def _split() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype("float32") / 16.0  # (1797, 8, 8), 0..16 → [0, 1]
    labels = bunch.target.astype("int64")
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return {
        "train": (torch.from_numpy(x_tr).unsqueeze(1), torch.from_numpy(y_tr)),
        "test": (torch.from_numpy(x_te).unsqueeze(1), torch.from_numpy(y_te)),
    }


def load_size(split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _split()[split]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        x = x.clamp_(0.0, 1.0)  # guard float rounding; bilinear weights already keep [0, 1]
    return x.clone(), y.clone()


def _spec(name: str, size: int) -> DatasetSpec:
    def load(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return load_size(split, size)

    how = "native 8x8" if size == 8 else f"upsampled bilinearly from 8x8 to {size}x{size}"
    return DatasetSpec(
        name=name,
        channels=1,
        image_size=size,
        num_classes=10,
        split_sizes={"train": 1437, "test": 360},
        load=load,
        needs_root=False,
        description=f"scikit-learn digits, 1x{size}x{size} ({how}), 10 classes, float pixels in [0, 1]",
    )


SPECS = {name: _spec(name, size) for name, size in SIZES.items()}
