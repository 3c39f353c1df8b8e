"""Errors, data-root resolution and the per-dataset spec that every dataset module fills in."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ENV_VAR = "CERTCORE_DATA"
DEFAULT_ROOT = Path("~/.cache/certcore")
SPLITS = ("train", "test")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files (or the data directory itself) are missing. The message is one line."""


class DatasetFormatError(ValueError):
    """A dataset file exists but its contents are not what the format promises (magic, shape, count)."""


class UnknownDatasetError(ValueError):
    """A dataset name that is not registered."""


def resolve_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``data_dir`` (``--data-dir``), else ``$CERTCORE_DATA``, else ``~/.cache/certcore``.

    The root is torchvision's ``root``: MNIST lives in ``<root>/MNIST/raw/``, CIFAR-10 in
    ``<root>/cifar-10-batches-py/``, Tiny-ImageNet in ``<root>/tiny-imagenet-200/``, downsampled ImageNet
    64×64 (no torchvision layout) in ``<root>/imagenet64/``. The root is not
    created here; a missing explicit root is reported by the loaders as :class:`DatasetNotFoundError`.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT.expanduser()


def root_origin(data_dir: str | os.PathLike[str] | None) -> str:
    """Where the root came from, for error messages."""
    if data_dir is not None and str(data_dir) != "":
        return "--data-dir"
    if os.environ.get(ENV_VAR, ""):
        return f"${ENV_VAR}"
    return "the default root"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(map(repr, SPLITS))}")
    return split


def missing_files_error(
    name: str, split: str, root: Path, missing: Sequence[Path], how_to_get: str
) -> DatasetNotFoundError:
    """A one-line :class:`DatasetNotFoundError` naming the expected files and how to get them."""
    listed = ", ".join(str(p) for p in missing)
    return DatasetNotFoundError(f"{name} ({split}) not found under {root}: missing {listed}; {how_to_get}")


Loader = Callable[[Path, str], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DatasetSpec:
    """What the registry knows about one dataset.

    ``load(root, split) -> (x, y)`` returns every image of the split as ``(N, C, H, W)`` (uint8 in 0..255,
    or float32 in [0, 1] for digits) and int64 labels; it raises :class:`DatasetNotFoundError` when files
    are missing. ``make_dataset`` (optional) returns a lazy per-item dataset (Tiny-ImageNet decodes JPEGs
    on demand). ``download(root, split)`` fetches the files (``None``: nothing to download).
    """

    name: str
    channels: int
    image_size: int
    num_classes: int
    split_sizes: dict[str, int]
    load: Loader
    folder: str | None = None  # sub-folder of the root holding the files; None: needs no files
    download: Callable[[Path, str], None] | None = None
    make_dataset: Callable[..., torch.utils.data.Dataset] | None = None
    needs_root: bool = True
    description: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


Transform = Callable[[torch.Tensor], torch.Tensor]


class ImageTensorDataset(torch.utils.data.Dataset):
    """Images held in memory as one ``(N, C, H, W)`` tensor; ``transform`` maps a batch of one to floats.

    ``tensors`` gives the raw ``(x, y)``; ``targets`` the labels (for samplers), as in torchvision.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        transform: Transform | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"expected x (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
        self.x, self.targets, self.transform = x, y, transform
        self.classes = list(classes) if classes is not None else None

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.targets

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.x[index : index + 1] if index >= 0 else self.x[index].unsqueeze(0)
        if self.transform is not None:
            img = self.transform(img)
        return img[0], int(self.targets[index])


class ImageFileDataset(torch.utils.data.Dataset):
    """Images decoded from files on demand (``read(path) -> (C, H, W) uint8``); ``transform`` as above."""

    def __init__(
        self,
        paths: Sequence[Path],
        targets: torch.Tensor,
        read: Callable[[Path], torch.Tensor],
        transform: Transform | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if len(paths) != targets.shape[0]:
            raise ValueError(f"{len(paths)} files but {targets.shape[0]} labels")
        self.paths, self.targets, self.read, self.transform = list(paths), targets, read, transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.read(self.paths[index]).unsqueeze(0)
        if self.transform is not None:
            img = self.transform(img)
        return img[0], int(self.targets[index])
