"""The dataset registry: :func:`dataset_info`, :func:`load_dataset`, :func:`load_tensors`."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch

from certcore.data import cifar, digits, imagenet64, mnist, tinyimagenet
from certcore.data.base import (
    ENV_VAR,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetSpec,
    ImageTensorDataset,
    UnknownDatasetError,
    check_split,
    resolve_data_root,
    root_origin,
)
from certcore.data.recipes import NO_AUGMENTATION, Augmentation, Normalization, get_recipe
from certcore.data.transforms import BatchTransform, stats_tensors

_SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (mnist.SPEC, cifar.SPEC, tinyimagenet.SPEC, imagenet64.SPEC, *digits.SPECS.values())
}
_ALIASES = {
    "cifar": "cifar10",
    "tiny": "tinyimagenet",
    "tinyimagenet200": "tinyimagenet",
    "imagenet64x64": "imagenet64",
    "downsampledimagenet64": "imagenet64",
    "downsampledimagenet64x64": "imagenet64",
}

PathLike = str | os.PathLike[str]
T = TypeVar("T")


def list_datasets() -> tuple[str, ...]:
    """Registered dataset names."""
    return tuple(sorted(_SPECS))


def canonical_name(name: str) -> str:
    """``"CIFAR-10"``, ``"CIFAR"`` → ``"cifar10"``; ``"Tiny-ImageNet"`` → ``"tinyimagenet"``;
    ``"ImageNet-64"``, ``"downsampled-imagenet64"`` → ``"imagenet64"``."""
    key = str(name).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in _SPECS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; expected one of {', '.join(list_datasets())}")
    return key


def get_spec(name: str) -> DatasetSpec:
    return _SPECS[canonical_name(name)]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a certifier need to know about a dataset under one normalization.

    ``input_shape`` is what the model sees (after a recipe's crop); ``data_min``/``data_max`` are the
    normalized images of pixel values 0 and 1, shaped ``(1, C, 1, 1)``, for clipping perturbed inputs.
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    normalization: Normalization
    augmentation: Augmentation = NO_AUGMENTATION
    recipe: str | None = None
    split_sizes: dict[str, int] | None = None
    description: str = ""

    @property
    def channels(self) -> int:
        return self.input_shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return stats_tensors(self.normalization, self.channels)[0]

    @property
    def std(self) -> torch.Tensor:
        return stats_tensors(self.normalization, self.channels)[1]

    @property
    def data_min(self) -> torch.Tensor:
        """``(0 - mean) / std`` as a ``(1, C, 1, 1)`` float32 tensor."""
        mean, std = stats_tensors(self.normalization, self.channels)
        return (0.0 - mean) / std

    @property
    def data_max(self) -> torch.Tensor:
        """``(1 - mean) / std`` as a ``(1, C, 1, 1)`` float32 tensor."""
        mean, std = stats_tensors(self.normalization, self.channels)
        return (1.0 - mean) / std

    def eps_to_normalized(
        self, eps: float, *, per_channel: bool = False, p: float = math.inf
    ) -> float | torch.Tensor:
        """Map a pixel-space radius ε (pixels in [0, 1]) to normalized coordinates.

        With a scalar std the ℓp ball of radius ε becomes the ℓp ball of radius ``ε / std`` (returned as
        a float; ``per_channel=True`` returns it as a ``(1, C, 1, 1)`` tensor). With per-channel stds the
        ℓ∞ ball becomes a box with radius ``ε / std_c`` in channel c, which is not a ball: that raises
        unless ``per_channel=True``, which returns those radii as a ``(1, C, 1, 1)`` tensor. For
        ``p != inf`` and per-channel stds there is no such description (the ball becomes an ellipsoid)
        and it always raises.
        """
        eps = float(eps)
        if not (eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be finite and >= 0, got {eps}")
        if self.normalization.scalar_std:
            scaled = eps / self.normalization.std[0]
            return torch.full((1, self.channels, 1, 1), scaled) if per_channel else scaled
        if p != math.inf:
            raise ValueError(
                f"{self.name} with std {self.normalization.std}: a per-channel std maps an ℓ{p:g} ball to an "
                "ellipsoid, not a ball; use a recipe with one scalar std (e.g. 'linfdist', 'none', 'gloro')"
            )
        if not per_channel:
            raise ValueError(
                f"{self.name} with per-channel std {self.normalization.std}: the pixel ℓ∞ ball of radius "
                f"{eps:g} is a box with radius eps/std_c per channel, not a ball; pass per_channel=True for "
                "those radii as a (1, C, 1, 1) tensor, or use a recipe with a scalar std"
            )
        return eps / self.std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float pixels in [0, 1] → normalized."""
        mean, std = stats_tensors(self.normalization, self.channels, x.device, x.dtype)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = stats_tensors(self.normalization, self.channels, x.device, x.dtype)
        return x * std + mean

    def linf_box(self, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The pixel ℓ∞ ball of radius ``eps`` around normalized ``x``, as ``(lower, upper)`` clipped to the
        data range (``max(x - ε/std, data_min)``, ``min(x + ε/std, data_max)``); works for any std."""
        radius = self.eps_to_normalized(eps, per_channel=True).to(x.device, x.dtype)
        lo, hi = self.data_min.to(x.device, x.dtype), self.data_max.to(x.device, x.dtype)
        return torch.maximum(x - radius, lo), torch.minimum(x + radius, hi)

    def batch_transform(self, augment: bool | Augmentation = False) -> BatchTransform:
        """The pixels → normalized-batch transform (``augment=True``: this info's training augmentation)."""
        if isinstance(augment, Augmentation):
            return BatchTransform(self.normalization, augment, train=True)
        return BatchTransform(self.normalization, self.augmentation, train=bool(augment))


def _resolve_normalization(
    dataset: str, normalization: str | Normalization
) -> tuple[Normalization, Augmentation, str | None]:
    if isinstance(normalization, Normalization):
        return normalization, NO_AUGMENTATION, None
    if not isinstance(normalization, str):
        raise TypeError(
            f"normalization must be a recipe name or a Normalization, got {type(normalization).__name__}"
        )
    entry = get_recipe(normalization).entry(dataset)
    return entry.normalization, entry.augmentation, normalization


def dataset_info(name: str, normalization: str | Normalization = "none") -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` under a recipe name (``"linfdist"``, ...) or a
    :class:`Normalization`."""
    spec = get_spec(name)
    norm, aug, recipe = _resolve_normalization(spec.name, normalization)
    norm.check_channels(spec.channels)
    size = aug.output_size(spec.image_size)
    if size > spec.image_size + 2 * aug.padding:
        raise ValueError(
            f"recipe crop {size} is larger than {spec.name}'s {spec.image_size}x{spec.image_size} images"
        )
    return DatasetInfo(
        spec.name,
        (spec.channels, size, size),
        spec.num_classes,
        norm,
        aug,
        recipe,
        dict(spec.split_sizes),
        spec.description,
    )


def _root_for(spec: DatasetSpec, data_dir: PathLike | None, download: bool) -> Path:
    root = resolve_data_root(data_dir)
    if spec.needs_root and not root.is_dir():
        if download:
            root.mkdir(parents=True, exist_ok=True)
        else:
            raise DatasetNotFoundError(
                f"data directory {root} (from {root_origin(data_dir)}) does not exist; pass an existing "
                f"--data-dir (or set ${ENV_VAR}), or add --download to fetch {spec.name} into it"
            )
    return root


def _with_download(spec: DatasetSpec, root: Path, split: str, download: bool, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except DatasetNotFoundError:
        if not download or spec.download is None:
            raise
    spec.download(root, split)
    return fn()


def _load_checked(
    spec: DatasetSpec, root: Path, split: str, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _with_download(spec, root, split, download, lambda: spec.load(root, split))
    if tuple(x.shape[1:]) != spec.image_shape or y.shape != (x.shape[0],):
        raise DatasetFormatError(
            f"{spec.name} ({split}) under {root}: expected images "
            f"(N, {', '.join(map(str, spec.image_shape))}) and labels (N,), "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


def load_tensors(
    name: str,
    split: str = "train",
    *,
    data_dir: PathLike | None = None,
    download: bool = False,
    normalization: str | Normalization | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split in memory: ``(x, y)`` with ``x`` of shape ``(N, C, H, W)``, ``y`` int64 labels.

    ``normalization=None``: raw pixels, uint8 0..255 (float32 in [0, 1] for the digits datasets), read
    straight from the IDX / pickle / image files. Otherwise float32, normalized by the recipe or
    :class:`Normalization`, with the recipe's evaluation crop (no random augmentation; use
    ``dataset_info(...).batch_transform(augment=True)`` on batches for that).
    """
    spec = get_spec(name)
    check_split(split)
    info = dataset_info(spec.name, normalization) if normalization is not None else None
    root = _root_for(spec, data_dir, download)
    x, y = _load_checked(spec, root, split, download)
    if info is not None:
        x = info.batch_transform(augment=False)(x)
    return x, y


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: PathLike | None = None,
    download: bool = False,
    normalization: str | Normalization = "none",
    augment: bool | Augmentation | None = None,
) -> torch.utils.data.Dataset:
    """A map-style dataset of ``(image (C, H, W) float32 normalized, label int)``.

    ``normalization``: a recipe name (see ``certcore.data.RECIPES``) or a :class:`Normalization`.
    ``augment``: ``None`` (default) applies the recipe's augmentation to the train split only; ``True`` /
    ``False`` force it on / off; an :class:`Augmentation` is used as given. ``augment=True`` with a bare
    :class:`Normalization` is an error (it has no augmentation). The dataset has ``.info`` (the
    :class:`DatasetInfo`), ``.targets`` and, for in-memory datasets, ``.tensors`` (raw pixels).
    Data root: ``data_dir`` (``--data-dir``), else ``$CERTCORE_DATA``, else ``~/.cache/certcore``;
    ``download=True`` fetches missing files with torchvision.
    """
    spec = get_spec(name)
    check_split(split)
    info = dataset_info(spec.name, normalization)
    if augment is True and info.recipe is None:
        raise ValueError(
            "augment=True needs a recipe name as normalization; with a Normalization pass "
            "augment=Augmentation(...)"
        )
    if isinstance(augment, Augmentation):
        size = augment.output_size(spec.image_size)
        info = replace(info, augmentation=augment, input_shape=(spec.channels, size, size))
    elif augment is None:
        augment = split == "train"
    transform = info.batch_transform(augment)
    root = _root_for(spec, data_dir, download)
    if spec.make_dataset is not None:
        dataset = _with_download(
            spec, root, split, download, lambda: spec.make_dataset(root, split, transform)
        )
    else:
        x, y = _load_checked(spec, root, split, download)
        dataset = ImageTensorDataset(x, y, transform)
    dataset.info = info
    return dataset


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--data-dir`` and ``--download`` to a command-line parser."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"dataset root (torchvision layout); default ${ENV_VAR}, else ~/.cache/certcore",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download missing datasets with torchvision (never needed for digits)",
    )
    return parser
