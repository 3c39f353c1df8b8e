"""Integration: the real MNIST in ../shared/data (the four official .gz files, read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from certcore.data import dataset_info, load_dataset, load_tensors

SHARED_DATA = (Path(__file__).parents[3] / ".." / "shared" / "data").resolve()
MNIST_RAW = SHARED_DATA / "MNIST" / "raw"
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Class counts from shared/data/README.md.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not all((MNIST_RAW / f).is_file() for f in FILES),
        reason=f"real MNIST .gz files not found in {MNIST_RAW} (shared/data is absent here)",
    ),
]


def test_real_mnist_sizes_and_class_counts():
    before = sorted(p.name for p in MNIST_RAW.iterdir())
    x_tr, y_tr = load_tensors("mnist", "train", data_dir=SHARED_DATA)
    x_te, y_te = load_tensors("mnist", "test", data_dir=SHARED_DATA)
    assert x_tr.shape == (60000, 1, 28, 28) and x_te.shape == (10000, 1, 28, 28)
    assert x_tr.dtype == torch.uint8 and int(x_tr.max()) == 255 and int(x_tr.min()) == 0
    assert torch.bincount(y_tr, minlength=10).tolist() == TRAIN_COUNTS
    assert torch.bincount(y_te, minlength=10).tolist() == TEST_COUNTS
    assert y_te[:2].tolist() == [7, 2]  # auto_LiRPA's test_samples: test images 0 and 1 are a 7 and a 2
    # The linfdist statistics are MNIST's own: train mean 0.1307, std 0.3081.
    pix = x_tr.float() / 255
    assert pix.mean().item() == pytest.approx(0.1307, abs=1e-4)
    assert pix.std().item() == pytest.approx(0.3081, abs=1e-4)
    assert sorted(p.name for p in MNIST_RAW.iterdir()) == before  # nothing unpacked into shared/


def test_real_mnist_dataset_linfdist():
    test = load_dataset("mnist", "test", data_dir=SHARED_DATA, normalization="linfdist")
    img, label = test[0]
    info = dataset_info("mnist", "linfdist")
    assert len(test) == 10000 and label == 7 and img.shape == (1, 28, 28)
    assert img.min() >= info.data_min.min() - 1e-6 and img.max() <= info.data_max.max() + 1e-6
