"""Datasets for every certkit paper: MNIST, CIFAR-10, Tiny-ImageNet, ImageNet 64x64 and scikit-learn's digits.

    from certcore.data import load_dataset, load_tensors, dataset_info

    info = dataset_info("cifar10", "linfdist")          # shapes, mean/std, data_min/data_max, ε mapping
    train = load_dataset("cifar10", "train", normalization="linfdist")       # recipe augmentation on
    test = load_dataset("cifar10", "test", normalization="linfdist")         # no augmentation
    x, y = load_tensors("mnist", "train", data_dir="../shared/data")         # uint8 (N, 1, 28, 28), int64
    batch = info.batch_transform(augment=True)(x[idx].cuda())                 # crop/flip/normalize on the GPU

Datasets: ``mnist``, ``cifar10``, ``tinyimagenet`` (test = the labelled val split), ``imagenet64``
(downsampled ImageNet, the release's npz or pickle batches; test = ``val_data``; never downloaded),
``digits`` (8x8), ``digits16``, ``digits28`` (bilinear upsampling). Recipes: ``none``, ``linfdist``,
``fastibp``, ``lirpa``, ``gloro``, ``lipnorm`` (see :mod:`certcore.data.recipes` for every number and its
source).
Data root: ``data_dir`` / ``--data-dir``, else ``$CERTCORE_DATA``, else ``~/.cache/certcore`` (torchvision's
layout). Nothing is downloaded unless ``download=True`` / ``--download``; missing files raise
:class:`DatasetNotFoundError` (a ``FileNotFoundError``) naming the expected files.
"""

from certcore.data.base import (
    DatasetFormatError,
    DatasetNotFoundError,
    ImageFileDataset,
    ImageTensorDataset,
    UnknownDatasetError,
    resolve_data_root,
)
from certcore.data.recipes import RECIPES, Augmentation, Normalization, Recipe, RecipeEntry
from certcore.data.registry import (
    DatasetInfo,
    add_data_arguments,
    canonical_name,
    dataset_info,
    list_datasets,
    load_dataset,
    load_tensors,
)
from certcore.data.transforms import (
    BatchTransform,
    center_crop,
    denormalize,
    normalize,
    random_crop,
    random_hflip,
)

__all__ = [
    "RECIPES",
    "Augmentation",
    "BatchTransform",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageFileDataset",
    "ImageTensorDataset",
    "Normalization",
    "Recipe",
    "RecipeEntry",
    "UnknownDatasetError",
    "add_data_arguments",
    "canonical_name",
    "center_crop",
    "dataset_info",
    "denormalize",
    "list_datasets",
    "load_dataset",
    "load_tensors",
    "normalize",
    "random_crop",
    "random_hflip",
    "resolve_data_root",
]
