"""Tiny datasets written in the real on-disk layouts, loaded back through load_tensors / load_dataset."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from certcore.data import DatasetFormatError, DatasetNotFoundError, dataset_info, load_dataset, load_tensors
from certcore.data.formats import (
    write_fake_cifar10,
    write_fake_mnist,
    write_fake_tinyimagenet,
    write_idx,
    write_image,
)

# --- MNIST -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "raw"])
def test_mnist_load_tensors(tmp_path, compressed):
    written = write_fake_mnist(tmp_path, n_train=12, n_test=7, compressed=compressed)
    suffix = ".gz" if compressed else ""
    assert (tmp_path / "MNIST" / "raw" / f"train-images-idx3-ubyte{suffix}").is_file()
    for split in ("train", "test"):
        x, y = load_tensors("mnist", split, data_dir=tmp_path)
        images, labels = written[split]
        assert x.dtype == torch.uint8 and x.shape == (len(images), 1, 28, 28)
        assert y.dtype == torch.int64
        assert torch.equal(x[:, 0], torch.from_numpy(images))
        assert torch.equal(y, torch.from_numpy(labels).long())


def test_mnist_raw_file_wins_over_gz(tmp_path):
    write_fake_mnist(tmp_path, n_train=4, n_test=2, compressed=True, seed=0)
    raw = write_fake_mnist(tmp_path, n_train=4, n_test=2, compressed=False, seed=1)
    x, _ = load_tensors("mnist", "train", data_dir=tmp_path)
    assert torch.equal(x[:, 0], torch.from_numpy(raw["train"][0]))


def test_mnist_dataset_linfdist_values(tmp_path):
    written = write_fake_mnist(tmp_path, n_train=6, n_test=5)
    test = load_dataset("mnist", "test", data_dir=tmp_path, normalization="linfdist")
    assert len(test) == 5 and test.info.recipe == "linfdist"
    img, label = test[3]
    want = (torch.from_numpy(written["test"][0][3]).float() / 255 - 0.1307) / 0.3081
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32
    assert torch.allclose(img[0], want, atol=1e-6)
    assert label == int(written["test"][1][3])
    assert torch.equal(test[3][0], img)  # no augmentation on the test split
    info = test.info
    assert torch.all(img >= info.data_min - 1e-6) and torch.all(img <= info.data_max + 1e-6)


def test_mnist_train_augmentation_edge_crop_seeded(tmp_path):
    write_fake_mnist(tmp_path, n_train=4, n_test=2)
    train = load_dataset("mnist", "train", data_dir=tmp_path, normalization="linfdist")
    plain = load_dataset("mnist", "train", data_dir=tmp_path, normalization="linfdist", augment=False)
    torch.manual_seed(0)
    a = [train[0][0] for _ in range(30)]
    torch.manual_seed(0)
    b = [train[0][0] for _ in range(30)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(u.shape == (1, 28, 28) for u in a)
    assert any(not torch.equal(u, plain[0][0]) for u in a)
    # padding=1 with edge mode: every augmented image is a one-pixel shift of the original with the border
    # replicated, so each of its values occurs in the original.
    base = set(plain[0][0].flatten().tolist())
    assert all(set(u.flatten().tolist()) <= base for u in a)


def test_mnist_wrong_image_shape(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte.gz", np.zeros((3, 27, 28), np.uint8))
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.zeros((3,), np.uint8))
    with pytest.raises(
        DatasetFormatError, match=r"expected uint8 IDX3 images of shape \(N, 28, 28\).*\(3, 27, 28\)"
    ):
        load_tensors("mnist", "train", data_dir=tmp_path)


def test_mnist_label_count_mismatch(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros((2,), np.uint8))
    with pytest.raises(DatasetFormatError, match="expected 3 labels"):
        load_tensors("mnist", "test", data_dir=tmp_path)


def test_mnist_missing_one_file_names_it(tmp_path):
    write_fake_mnist(tmp_path, n_train=2, n_test=2)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_tensors("mnist", "test", data_dir=tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte[.gz]" in msg and "t10k-images" not in msg
    assert "--download" in msg and "\n" not in msg


# --- CIFAR-10 --------------------------------------------------------------------------------------------


def test_cifar_load_tensors_concatenates_the_five_batches(tmp_path):
    written = write_fake_cifar10(tmp_path, n_train=13, n_test=4)
    names = sorted(p.name for p in (tmp_path / "cifar-10-batches-py").iterdir())
    assert names == [
        "batches.meta",
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ]
    for split in ("train", "test"):
        x, y = load_tensors("cifar10", split, data_dir=tmp_path)
        assert x.dtype == torch.uint8 and x.shape == (len(written[split][0]), 3, 32, 32)
        assert torch.equal(x, torch.from_numpy(written[split][0]))
        assert torch.equal(y, torch.from_numpy(written[split][1]))


def test_cifar_loads_without_torchvision_md5(tmp_path):
    """torchvision's CIFAR10 refuses these files (MD5 mismatch); our reader loads them."""
    from torchvision.datasets import CIFAR10

    write_fake_cifar10(tmp_path, n_train=5, n_test=5)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=False, download=False)
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path)) == 5


@pytest.mark.parametrize(
    "recipe, mean, std",
    [
        ("linfdist", (0.4914, 0.4822, 0.4465), (0.2009, 0.2009, 0.2009)),
        ("fastibp", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        ("lirpa", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        ("gloro", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        ("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ],
)
def test_cifar_normalization_per_recipe(tmp_path, recipe, mean, std):
    written = write_fake_cifar10(tmp_path, n_train=5, n_test=3)
    test = load_dataset("cifar10", "test", data_dir=tmp_path, normalization=recipe)
    img, _ = test[2]
    pix = torch.from_numpy(written["test"][0][2]).float() / 255
    want = (pix - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(img, want, atol=1e-5)
    x, _ = load_tensors("cifar10", "test", data_dir=tmp_path, normalization=recipe)
    assert torch.allclose(x[2], want, atol=1e-5)


def test_cifar_train_augmentation_flip_and_crop(tmp_path):
    write_fake_cifar10(tmp_path, n_train=3, n_test=1)
    train = load_dataset("cifar10", "train", data_dir=tmp_path, normalization="fastibp")
    plain = load_dataset("cifar10", "train", data_dir=tmp_path, normalization="fastibp", augment=False)
    torch.manual_seed(1)
    outs = [train[1][0] for _ in range(50)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert sum(torch.equal(o, plain[1][0]) for o in outs) < 50


def test_cifar_missing_batches(tmp_path):
    write_fake_cifar10(tmp_path, n_train=5, n_test=1)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3") as info:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert "cifar-10-python.tar.gz" in str(info.value)


# --- Tiny-ImageNet ---------------------------------------------------------------------------------------


def test_tinyimagenet_layout_and_exact_pixels(tmp_path):
    written = write_fake_tinyimagenet(tmp_path, n_classes=3, n_train_per_class=2, n_val=5, image_format="png")
    base = tmp_path / "tiny-imagenet-200"
    assert (base / "val" / "val_annotations.txt").is_file()
    assert len(list((base / "train").glob("*/images/*.png"))) == 6
    for split in ("train", "test"):
        x, y = load_tensors("tinyimagenet", split, data_dir=tmp_path)
        wx, wy = written[split]
        assert x.dtype == torch.uint8 and x.shape == (len(wx), 3, 64, 64)
        # Order: train by sorted wnid then file name; test in annotation order.
        assert sorted(y.tolist()) == sorted(wy.tolist())
        if split == "test":
            assert torch.equal(x, torch.from_numpy(wx)) and torch.equal(y, torch.from_numpy(wy))


def test_tinyimagenet_labels_follow_sorted_wnids(tmp_path):
    write_fake_tinyimagenet(tmp_path, n_classes=3, n_train_per_class=1, n_val=3)
    wnids = (tmp_path / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert wnids != sorted(wnids)  # the writer lists them out of order, like the release
    ds = load_dataset("tinyimagenet", "train", data_dir=tmp_path)
    assert ds.classes == sorted(wnids)
    assert [ds.paths[i].parent.parent.name for i in range(3)] == sorted(wnids)
    assert ds.targets.tolist() == [0, 1, 2]


def test_tinyimagenet_dataset_recipes(tmp_path):
    written = write_fake_tinyimagenet(tmp_path, n_classes=2, n_train_per_class=2, n_val=2)
    test = load_dataset("tinyimagenet", "test", data_dir=tmp_path, normalization="fastibp")
    img, label = test[1]
    mean = torch.tensor((0.4802, 0.4481, 0.3975)).view(3, 1, 1)
    std = torch.tensor((0.2302, 0.2265, 0.2262)).view(3, 1, 1)
    want = (torch.from_numpy(written["test"][0][1]).float() / 255 - mean) / std
    assert torch.allclose(img, want, atol=1e-5) and label == written["test"][1][1]
    lirpa_test = load_dataset("tinyimagenet", "test", data_dir=tmp_path, normalization="lirpa")
    assert lirpa_test.info.input_shape == (3, 56, 56)
    assert torch.allclose(lirpa_test[1][0], want[:, 4:60, 4:60], atol=1e-5)  # CenterCrop(56)
    lirpa_train = load_dataset("tinyimagenet", "train", data_dir=tmp_path, normalization="lirpa")
    assert lirpa_train[0][0].shape == (3, 56, 56)
    lin = load_dataset("tinyimagenet", "train", data_dir=tmp_path, normalization="linfdist")
    assert lin[0][0].shape == (3, 64, 64)


def test_tinyimagenet_jpeg_release_format(tmp_path):
    write_fake_tinyimagenet(tmp_path, n_classes=2, n_train_per_class=2, n_val=2, image_format="JPEG")
    assert len(list((tmp_path / "tiny-imagenet-200" / "val" / "images").glob("*.JPEG"))) == 2
    x, y = load_tensors("tinyimagenet", "train", data_dir=tmp_path)
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 1]


def test_tinyimagenet_val_sorted_into_class_folders(tmp_path):
    """fast-IBP's tinyimagenet_download.sh moves val images into val/<wnid>/; that layout loads too."""
    written = write_fake_tinyimagenet(tmp_path, n_classes=2, n_train_per_class=1, n_val=4)
    val = tmp_path / "tiny-imagenet-200" / "val"
    for line in (val / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        (val / wnid / "images").mkdir(parents=True, exist_ok=True)
        shutil.move(val / "images" / name, val / wnid / "images" / name)
    (val / "val_annotations.txt").unlink()
    x, y = load_tensors("tinyimagenet", "test", data_dir=tmp_path)
    assert x.shape == (4, 3, 64, 64)
    assert sorted(y.tolist()) == sorted(written["test"][1].tolist())


def test_tinyimagenet_wrong_image_size(tmp_path):
    write_fake_tinyimagenet(tmp_path, n_classes=2, n_train_per_class=1, n_val=2)
    bad = next((tmp_path / "tiny-imagenet-200" / "val" / "images").iterdir())
    write_image(bad, np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(DatasetFormatError, match="expected a 64x64 Tiny-ImageNet image, got 32x32"):
        load_tensors("tinyimagenet", "test", data_dir=tmp_path)


def test_tinyimagenet_bad_annotation_and_missing_val(tmp_path):
    write_fake_tinyimagenet(tmp_path, n_classes=2, n_train_per_class=1, n_val=2)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text("val_0.png\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DatasetFormatError, match="val_annotations.txt:1"):
        load_dataset("tinyimagenet", "test", data_dir=tmp_path)
    shutil.rmtree(tmp_path / "tiny-imagenet-200" / "val")
    with pytest.raises(DatasetNotFoundError, match="val_annotations.txt"):
        load_dataset("tinyimagenet", "test", data_dir=tmp_path)


def test_tinyimagenet_missing_train(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"tiny-imagenet-200/train/<wnid>/images/\*\.JPEG"):
        load_dataset("tinyimagenet", "train", data_dir=tmp_path)


# --- scikit-learn digits ---------------------------------------------------------------------------------


def test_digits_split_values_and_sizes(tmp_path):
    from sklearn.datasets import load_digits

    x_tr, y_tr = load_tensors("digits", "train", data_dir=tmp_path / "does-not-exist")  # needs no files
    x_te, y_te = load_tensors("digits", "test")
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert x_tr.dtype == torch.float32 and float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0
    # Every value is k/16 and the two splits partition sklearn's 1797 images.
    assert torch.equal(x_tr * 16, (x_tr * 16).round())
    full = torch.from_numpy(load_digits().images.astype("float32") / 16).flatten(1)
    both = torch.cat([x_tr, x_te]).flatten(1)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, full.tolist()))
    assert torch.bincount(y_te).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # stratified
    again, _ = load_tensors("digits", "train")
    assert torch.equal(again, x_tr)  # fixed seed


@pytest.mark.parametrize("name, size", [("digits16", 16), ("digits28", 28)])
def test_digits_upsampled(name, size):
    x, y = load_tensors(name, "test")
    small, y8 = load_tensors("digits", "test")
    assert x.shape == (360, 1, size, size) and torch.equal(y, y8)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # The documented interpolation: bilinear, align_corners=False, no antialiasing.
    want = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    assert torch.allclose(x, want)
    back = torch.nn.functional.interpolate(x, size=(8, 8), mode="area").flatten()
    assert torch.corrcoef(torch.stack([back, small.flatten()]))[0, 1] > 0.95
    info = dataset_info(name)
    assert info.input_shape == (1, size, size)
    ds = load_dataset(name, "train")
    assert ds[0][0].shape == (1, size, size) and len(ds) == 1437
