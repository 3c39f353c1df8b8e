"""DatasetInfo, the recipes, root resolution, download flow and error messages."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from certcore.data import (
    RECIPES,
    Augmentation,
    DatasetNotFoundError,
    Normalization,
    UnknownDatasetError,
    add_data_arguments,
    canonical_name,
    dataset_info,
    list_datasets,
    load_dataset,
    load_tensors,
    registry,
    resolve_data_root,
)
from certcore.data.formats import write_fake_mnist


def test_list_and_aliases():
    assert list_datasets() == (
        "cifar10",
        "digits",
        "digits16",
        "digits28",
        "imagenet64",
        "mnist",
        "tinyimagenet",
    )
    assert canonical_name("CIFAR-10") == canonical_name("CIFAR") == "cifar10"
    assert canonical_name("Tiny-ImageNet") == canonical_name("tiny_imagenet") == "tinyimagenet"
    assert canonical_name("MNIST") == "mnist"


@pytest.mark.parametrize(
    "name, recipe, shape, classes",
    [
        ("mnist", "linfdist", (1, 28, 28), 10),
        ("mnist", "fastibp", (1, 28, 28), 10),
        ("cifar10", "lirpa", (3, 32, 32), 10),
        ("cifar10", "gloro", (3, 32, 32), 10),
        ("cifar10", "lipnorm", (3, 32, 32), 10),
        ("tinyimagenet", "fastibp", (3, 64, 64), 200),
        ("tinyimagenet", "lirpa", (3, 56, 56), 200),
        ("tinyimagenet", "linfdist", (3, 64, 64), 200),
        ("digits", "none", (1, 8, 8), 10),
        ("digits28", "none", (1, 28, 28), 10),
    ],
)
def test_info_shapes_and_data_range(name, recipe, shape, classes):
    info = dataset_info(name, recipe)
    assert info.input_shape == shape and info.num_classes == classes and info.recipe == recipe
    c = shape[0]
    assert info.data_min.shape == info.data_max.shape == (1, c, 1, 1)
    assert torch.allclose(info.data_min, (0 - info.mean) / info.std)
    assert torch.allclose(info.data_max, (1 - info.mean) / info.std)
    assert torch.allclose(info.normalize(torch.zeros(1, c, 2, 2)), info.data_min.expand(1, c, 2, 2))
    assert torch.allclose(info.normalize(torch.ones(1, c, 2, 2)), info.data_max.expand(1, c, 2, 2))


def test_paper_numbers():
    lin = dataset_info("mnist", "linfdist")
    assert lin.normalization == Normalization((0.1307,), (0.3081,))
    assert lin.augmentation == Augmentation(random_crop=True, padding=1, padding_mode="edge")
    cif = dataset_info("cifar10", "linfdist")
    assert cif.normalization.std == (0.2009,) and cif.normalization.scalar_std
    assert cif.augmentation == Augmentation(random_crop=True, padding=3, padding_mode="edge", hflip=True)
    assert torch.allclose(cif.data_min.flatten(), -torch.tensor([0.4914, 0.4822, 0.4465]) / 0.2009)
    fast = dataset_info("cifar10", "fastibp")
    assert fast.normalization.std == (0.2023, 0.1994, 0.2010) and not fast.normalization.scalar_std
    assert fast.augmentation.padding == 2 and fast.augmentation.hflip
    assert dataset_info("cifar10", "lirpa").augmentation.padding == 4
    assert dataset_info("tinyimagenet", "gloro").augmentation == Augmentation(
        random_crop=True, padding=8, padding_mode="constant", hflip=True
    )
    assert dataset_info("mnist", "fastibp").normalization == Normalization()
    for recipe in RECIPES.values():
        for entry in recipe.entries.values():
            assert entry.source, recipe.name


def test_eps_to_normalized():
    lin = dataset_info("cifar10", "linfdist")
    assert lin.eps_to_normalized(8 / 255) == pytest.approx(8 / 255 / 0.2009)
    assert lin.eps_to_normalized(0.5, p=2) == pytest.approx(0.5 / 0.2009)
    per = lin.eps_to_normalized(8 / 255, per_channel=True)
    assert per.shape == (1, 3, 1, 1) and torch.allclose(per, torch.full((1, 3, 1, 1), 8 / 255 / 0.2009))
    assert dataset_info("mnist", "none").eps_to_normalized(0.3) == 0.3
    fast = dataset_info("cifar10", "fastibp")
    with pytest.raises(ValueError, match="not a ball; pass per_channel=True"):
        fast.eps_to_normalized(8 / 255)
    radii = fast.eps_to_normalized(8 / 255, per_channel=True)
    assert torch.allclose(radii.flatten(), 8 / 255 / torch.tensor([0.2023, 0.1994, 0.2010]))
    with pytest.raises(ValueError, match="ellipsoid"):
        fast.eps_to_normalized(0.1, per_channel=True, p=2)
    with pytest.raises(ValueError, match="finite and >= 0"):
        lin.eps_to_normalized(-1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        lin.eps_to_normalized(math.nan)


def test_linf_box_is_the_clipped_pixel_ball():
    info = dataset_info("cifar10", "fastibp")
    pix = torch.rand(2, 3, 4, 4)
    pix[0, :, 0, 0] = 0.0
    pix[1, :, 0, 0] = 1.0
    lo, hi = info.linf_box(info.normalize(pix), 0.1)
    assert torch.allclose(info.denormalize(lo), (pix - 0.1).clamp(min=0), atol=1e-6)
    assert torch.allclose(info.denormalize(hi), (pix + 0.1).clamp(max=1), atol=1e-6)


def test_custom_normalization():
    norm = Normalization((0.5,), (0.25,))
    info = dataset_info("cifar10", norm)
    assert info.recipe is None and info.augmentation.is_identity
    assert torch.allclose(info.data_min, torch.full((1, 3, 1, 1), -2.0))
    with pytest.raises(ValueError, match="mean has 2 values; expected 1 or 3"):
        dataset_info("cifar10", Normalization((0.5, 0.5), (0.2,)))
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        Normalization((0.5,), (0.0,))
    with pytest.raises(TypeError, match="recipe name or a Normalization"):
        dataset_info("mnist", 0.5)


def test_unknown_names_and_bad_arguments(tmp_path):
    with pytest.raises(
        UnknownDatasetError, match="unknown dataset 'imagenet'; expected one of cifar10, digits"
    ):
        load_dataset("imagenet", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown normalization recipe 'crown'; expected one of .*linfdist"):
        dataset_info("mnist", "crown")
    with pytest.raises(
        ValueError, match="recipe 'lipnorm' defines no entry for dataset 'mnist'; it covers: cifar10"
    ):
        dataset_info("mnist", "lipnorm")
    with pytest.raises(ValueError, match="unknown split 'val'; expected one of 'train', 'test'"):
        load_tensors("digits", "val")
    with pytest.raises(ValueError, match="augment=True needs a recipe name"):
        load_dataset("digits", normalization=Normalization(), augment=True)
    with pytest.raises(ValueError, match="padding_mode must be 'edge' or 'constant'"):
        Augmentation(random_crop=True, padding=1, padding_mode="reflect")


def test_explicit_augmentation_overrides_recipe():
    ds = load_dataset("digits28", "train", augment=Augmentation(random_crop=True, crop_size=24))
    assert ds.info.input_shape == (1, 24, 24) and ds[0][0].shape == (1, 24, 24)


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("CERTCORE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "certcore"
    monkeypatch.setenv("CERTCORE_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root("~/x") == tmp_path / "home" / "x"


def test_env_var_root_is_used(monkeypatch, tmp_path):
    write_fake_mnist(tmp_path, n_train=3, n_test=2)
    monkeypatch.setenv("CERTCORE_DATA", str(tmp_path))
    x, _ = load_tensors("mnist", "test")
    assert x.shape == (2, 1, 28, 28)


def test_missing_data_dir_is_one_clear_line(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=missing)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in msg and str(missing) in msg and "--data-dir" in msg and "--download" in msg
    monkeypatch.setenv("CERTCORE_DATA", str(missing))
    with pytest.raises(DatasetNotFoundError, match=r"from \$CERTCORE_DATA"):
        load_tensors("cifar10")


def test_missing_files_name_expected_paths(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_tensors("mnist", "train", data_dir=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte[.gz]") in msg
    assert "train-labels-idx1-ubyte[.gz]" in msg and "--download" in msg and "shared/data/MNIST/raw" in msg
    with pytest.raises(DatasetNotFoundError) as info:
        load_tensors("cifar10", "test", data_dir=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in str(info.value)


def test_download_only_when_asked(monkeypatch, tmp_path):
    calls = []

    def fake_download(root: Path, split: str) -> None:
        calls.append((root, split))
        write_fake_mnist(root, n_train=4, n_test=3)

    spec = dataclasses.replace(registry._SPECS["mnist"], download=fake_download)
    monkeypatch.setitem(registry._SPECS, "mnist", spec)
    root = tmp_path / "fresh"
    with pytest.raises(DatasetNotFoundError):
        load_tensors("mnist", "test", data_dir=root)
    assert calls == []
    x, y = load_tensors("mnist", "test", data_dir=root, download=True)
    assert calls == [(root, "test")] and x.shape == (3, 1, 28, 28)
    load_tensors("mnist", "train", data_dir=root, download=True)  # present now: no second download
    assert len(calls) == 1


def test_add_data_arguments():
    parser = add_data_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--data-dir", "/data", "--download"])
    assert args.data_dir == "/data" and args.download is True
    args = parser.parse_args([])
    assert args.data_dir is None and args.download is False
