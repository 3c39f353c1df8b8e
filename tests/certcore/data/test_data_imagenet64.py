"""Downsampled ImageNet 64x64: tiny batch files in the release format (npz and pickle), read back."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from certcore.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    canonical_name,
    dataset_info,
    load_dataset,
    load_tensors,
)
from certcore.data.formats import (
    IMAGENET64_TRAIN_BATCHES,
    read_imagenet64_batch,
    write_fake_imagenet64,
    write_imagenet64_batch,
)

MEAN = torch.tensor([0.4815, 0.4578, 0.4082]).view(3, 1, 1)  # auto_LiRPA imagenet_training.py
STD = torch.tensor([0.2153, 0.2111, 0.2121]).view(3, 1, 1)


def _raw(path):
    """The stored dict of one batch file, read here without certcore's reader."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("kind", ["npz", "pickle"])
def test_load_tensors_reads_the_release_files(tmp_path, kind):
    written = write_fake_imagenet64(tmp_path, n_train=13, n_test=3, kind=kind)
    suffix = ".npz" if kind == "npz" else ""
    folder = tmp_path / "imagenet64"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([f"{n}{suffix}" for n in IMAGENET64_TRAIN_BATCHES] + [f"val_data{suffix}"])
    for split, n in (("train", 13), ("test", 3)):
        x, y = load_tensors("imagenet64", split, data_dir=tmp_path)
        images, labels = written[split]
        assert x.dtype == torch.uint8 and x.shape == (n, 3, 64, 64)
        assert y.dtype == torch.int64 and y.shape == (n,)
        assert torch.equal(x, torch.from_numpy(images)) and torch.equal(y, torch.from_numpy(labels))
        assert int(y.min()) == 0 and int(y.max()) == 999  # the fake files hold the extreme ids 1 and 1000
    # the stored labels are 1-based, the loaded ones 0-based; the train split is the batches in order
    stored = [_raw(folder / f"{n}{suffix}") for n in IMAGENET64_TRAIN_BATCHES]
    assert all("mean" in entry for entry in stored)
    ids = np.concatenate([np.asarray(entry["labels"], dtype=np.int64) for entry in stored])
    assert ids.min() == 1 and ids.max() == 1000
    assert torch.equal(load_tensors("imagenet64", "train", data_dir=tmp_path)[1], torch.from_numpy(ids - 1))


def test_rows_are_channel_major(tmp_path):
    # One image whose value tells channel and row: the stored row is all red values (row by row), then
    # green, then blue; pixel (c, h, w) is element c·4096 + h·64 + w.
    c, h, w = np.meshgrid(np.arange(3), np.arange(64), np.arange(64), indexing="ij")
    image = (c * 80 + h).astype(np.uint8)[None]
    folder = tmp_path / "imagenet64"
    write_imagenet64_batch(folder / "val_data.npz", image, [7])
    row = _raw(folder / "val_data.npz")["data"][0]
    assert row.shape == (3 * 64 * 64,) and row[4096 + 5 * 64 + 9] == 80 + 5 and row[2 * 4096] == 160
    x, y = load_tensors("imagenet64", "test", data_dir=tmp_path)
    assert torch.equal(x[0], torch.from_numpy(image[0])) and y.tolist() == [6]


def test_float_values_and_the_lirpa_recipe(tmp_path):
    written = write_fake_imagenet64(tmp_path, n_train=10, n_test=3)
    raw = load_dataset("imagenet64", "test", data_dir=tmp_path)  # recipe "none": pixels / 255
    img, label = raw[1]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert torch.allclose(img, torch.from_numpy(written["test"][0][1]).float() / 255)
    assert label == int(written["test"][1][1])
    info = dataset_info("imagenet64", "lirpa")
    assert info.input_shape == (3, 56, 56) and info.num_classes == 1000
    test = load_dataset("imagenet64", "test", data_dir=tmp_path, normalization="lirpa")
    img, _ = test[2]
    pix = torch.from_numpy(written["test"][0][2]).float()[:, 4:60, 4:60] / 255  # CenterCrop(56)
    assert img.shape == (3, 56, 56) and torch.allclose(img, (pix - MEAN) / STD, atol=1e-5)
    train = load_dataset("imagenet64", "train", data_dir=tmp_path, normalization="lirpa")
    assert train[0][0].shape == (3, 56, 56)  # RandomCrop(56) + flip


def test_files_in_sub_folders_as_the_zips_unpack(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(2, 3, 64, 64), dtype=np.uint8)
    write_imagenet64_batch(tmp_path / "imagenet64" / "Imagenet64_val_npz" / "val_data.npz", images, [1, 2])
    x, y = load_tensors("imagenet64", "test", data_dir=tmp_path)
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [0, 1]


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_tensors("imagenet64", "test", data_dir=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path / "imagenet64" / "val_data[.npz]") in msg
    assert "Imagenet64_val_npz.zip" in msg and "image-net.org" in msg
    # two train batches only: the other eight are named, and --download cannot fetch them
    write_fake_imagenet64(tmp_path, n_train=4, n_test=2, n_train_batches=2)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("imagenet64", "train", data_dir=tmp_path, download=True)
    msg = str(info.value)
    assert "train_data_batch_1[" not in msg and "train_data_batch_2[" not in msg
    assert all(f"train_data_batch_{i}[.npz]" in msg for i in range(3, 11))
    images, labels = read_imagenet64_batch(tmp_path / "imagenet64" / "train_data_batch_2.npz")
    assert images.shape == (2, 3, 64, 64) and labels.min() >= 1  # the reader keeps the stored ids


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"data": np.zeros((2, 3 * 32 * 32), np.uint8), "labels": [1, 2]}, "shape (N, 12288)"),
        ({"data": np.zeros((2, 12288), np.float32), "labels": [1, 2]}, "must be uint8"),
        ({"data": np.zeros((2, 12288), np.uint8), "labels": [1]}, "must be 2 integer class ids"),
        ({"data": np.zeros((2, 12288), np.uint8), "labels": [0.5, 1.0]}, "integer class ids"),
        ({"images": np.zeros((2, 12288), np.uint8)}, "with 'data' and 'labels'; got ['images']"),
        ([1, 2], "got a list"),
    ],
)
def test_bad_batches(tmp_path, entry, needle):
    with open(tmp_path / "val_data", "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(DatasetFormatError) as info:
        read_imagenet64_batch(tmp_path / "val_data")
    assert needle in str(info.value)
    (tmp_path / "garbage").write_bytes(b"\x00garbage")
    with pytest.raises(DatasetFormatError, match="cannot read a downsampled-ImageNet batch"):
        read_imagenet64_batch(tmp_path / "garbage")


def test_labels_must_be_one_based(tmp_path):
    images = np.zeros((2, 3, 64, 64), np.uint8)
    write_imagenet64_batch(tmp_path / "imagenet64" / "val_data", images, [0, 999], kind="pickle")
    with pytest.raises(DatasetFormatError, match=r"1-based class ids 1\.\.1000, found 0\.\.999"):
        load_tensors("imagenet64", "test", data_dir=tmp_path)


def test_names_and_recipes():
    names = ("imagenet64", "ImageNet-64", "downsampled-imagenet64", "ImageNet64x64", "Downsampled_ImageNet64")
    assert {canonical_name(name) for name in names} == {"imagenet64"}
    info = dataset_info("imagenet-64")
    assert info.input_shape == (3, 64, 64) and info.split_sizes == {"train": 1281167, "test": 50000}
    with pytest.raises(ValueError, match="defines no entry for dataset 'imagenet64'"):
        dataset_info("imagenet64", "linfdist")
