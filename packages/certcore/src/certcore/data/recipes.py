"""Normalization and augmentation recipes of the papers, each number with its source.

A recipe is a name (``linfdist``, ``fastibp``, ``lirpa``, ``gloro``, ``lipnorm``, ``none``) and, per
dataset, a :class:`Normalization` (applied after scaling pixels to [0, 1]) and the training
:class:`Augmentation`. Sources are the papers' public code as summarised in ``shared/reference/*.md``:

* linfdist: zbh2047/L_inf-dist-net-v2 ``dataset.py`` (linfdist.md §1d "Input normalisation", "Augmentation").
  One scalar std per dataset so an ℓ∞ ball stays an ℓ∞ ball after normalization.
* fastibp: shizhouxing/Fast-Certified-Robust-Training ``datasets.py`` (fastibp.md §1.7). Per-channel std.
* lirpa: Verified-Intelligence/auto_LiRPA ``examples/vision/{cifar,tinyimagenet,imagenet}_training.py``
  (CROWN-IBP examples, lirpa.md §6). Per-channel std; Tiny-ImageNet and ImageNet 64×64 are cropped to 56×56.
* gloro: hukkai/gloro_res "Scaling in Depth" (hu23) ``train.py`` (gloro.md "Aug:"): inputs stay in [0, 1]
  (the model subtracts 0.5 itself), zero-padded random crop + flip. MNIST: no augmentation (gloro
  ``tools/README.md``, gloro.md "augmentation none").
* lipnorm: ``run_norm_regularization.sh`` (lipnorm.md "Norm regularization"): CIFAR-10 in [0, 1],
  RandomCrop(32, padding=4) + flip.

Padding modes: ``"edge"`` is torchvision's ``padding_mode='edge'``; ``"constant"`` pads with 0 in *pixel*
space (torchvision's default ``fill=0`` applied before ``Normalize``). The order crop-then-flip vs
flip-then-crop (fast-IBP and auto_LiRPA flip first) gives the same distribution, since the padding is
symmetric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

PaddingMode = Literal["edge", "constant"]


@dataclass(frozen=True)
class Normalization:
    """``x_normalized = (x_pixel01 - mean) / std``, per channel.

    ``mean``/``std`` hold one value (the same for every channel) or one per channel. A one-element ``std``
    (or equal values) is a *scalar* std: an ℓ∞ (or ℓ2) ball of radius ε in pixel space maps to a ball of
    radius ε/std, which per-channel stds do not preserve.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not self.mean or not self.std:
            raise ValueError(
                f"Normalization needs at least one mean and one std, got {self.mean}, {self.std}"
            )
        if any(not math.isfinite(m) for m in self.mean):
            raise ValueError(f"Normalization mean must be finite, got {self.mean}")
        if any(not (math.isfinite(s) and s > 0) for s in self.std):
            raise ValueError(f"Normalization std must be finite and > 0, got {self.std}")

    @property
    def scalar_std(self) -> bool:
        """True when every channel shares one std (so ε-balls stay balls)."""
        return len(set(self.std)) == 1

    def check_channels(self, channels: int) -> None:
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(
                    f"Normalization {what} has {len(values)} values; "
                    f"expected 1 or {channels} (one per channel)"
                )

    def per_channel(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` expanded to ``channels`` values each."""
        self.check_channels(channels)
        mean = self.mean * channels if len(self.mean) == 1 else self.mean
        std = self.std * channels if len(self.std) == 1 else self.std
        return mean, std


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, applied in pixel space before normalization.

    ``random_crop``: torchvision ``RandomCrop(crop_size, padding, padding_mode)``; ``crop_size=None`` keeps
    the image side. A ``crop_size`` smaller than the image also makes evaluation (and ``augment=False``)
    use a centre crop of that size, so shapes agree (auto_LiRPA's Tiny-ImageNet: RandomCrop(56) /
    CenterCrop(56)). ``hflip``: ``RandomHorizontalFlip(p=0.5)``.
    """

    random_crop: bool = False
    padding: int = 0
    padding_mode: PaddingMode = "edge"
    hflip: bool = False
    crop_size: int | None = None

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError(f"Augmentation padding must be >= 0, got {self.padding}")
        if self.padding_mode not in ("edge", "constant"):
            raise ValueError(
                f"Augmentation padding_mode must be 'edge' or 'constant', got {self.padding_mode!r}"
            )
        if self.crop_size is not None and self.crop_size <= 0:
            raise ValueError(f"Augmentation crop_size must be positive, got {self.crop_size}")

    @property
    def is_identity(self) -> bool:
        return not self.random_crop and not self.hflip

    def output_size(self, image_size: int) -> int:
        return image_size if self.crop_size is None else self.crop_size


NO_AUGMENTATION = Augmentation()
RAW = Normalization((0.0,), (1.0,))


@dataclass(frozen=True)
class RecipeEntry:
    normalization: Normalization
    augmentation: Augmentation = NO_AUGMENTATION
    source: str = ""


@dataclass(frozen=True)
class Recipe:
    """A named recipe: one :class:`RecipeEntry` per dataset name (``"*"`` matches every dataset)."""

    name: str
    entries: dict[str, RecipeEntry] = field(default_factory=dict)
    description: str = ""

    def entry(self, dataset: str) -> RecipeEntry:
        if dataset in self.entries:
            return self.entries[dataset]
        if "*" in self.entries:
            return self.entries["*"]
        have = ", ".join(sorted(self.entries))
        raise ValueError(
            f"normalization recipe {self.name!r} defines no entry for dataset {dataset!r}; "
            f"it covers: {have}. "
            "Use another recipe or pass a Normalization"
        )


# --- the numbers ------------------------------------------------------------------------------------------

_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # every paper's CIFAR-10 per-channel mean (e.g. fastibp datasets.py)
_CIFAR_STD = (0.2023, 0.1994, 0.2010)  # fastibp datasets.py `cifar10_std`, auto_LiRPA cifar_training.py
_TINY_MEAN = (0.4802, 0.4481, 0.3975)  # fastibp datasets.py, auto_LiRPA tinyimagenet_training.py, linfdist
_TINY_STD = (0.2302, 0.2265, 0.2262)  # fastibp datasets.py, auto_LiRPA tinyimagenet_training.py
_IMAGENET64_MEAN = (0.4815, 0.4578, 0.4082)  # auto_LiRPA imagenet_training.py
_IMAGENET64_STD = (0.2153, 0.2111, 0.2121)  # auto_LiRPA imagenet_training.py

RECIPES: dict[str, Recipe] = {
    "none": Recipe(
        "none",
        {"*": RecipeEntry(RAW, NO_AUGMENTATION, "raw pixels in [0, 1] (ToTensor only), no augmentation")},
        "raw [0, 1] pixels, no augmentation",
    ),
    "linfdist": Recipe(
        "linfdist",
        {
            # L_inf-dist-net-v2 dataset.py: mean {'MNIST': 0.1307}, std {'MNIST': 0.3081};
            # train_transforms 'MNIST': RandomCrop(28, padding=1, padding_mode='edge').
            "mnist": RecipeEntry(
                Normalization((0.1307,), (0.3081,)),
                Augmentation(random_crop=True, padding=1, padding_mode="edge"),
                "L_inf-dist-net-v2 dataset.py (linfdist.md §1d)",
            ),
            # dataset.py: mean CIFAR10 (0.4914, 0.4822, 0.4465), std 0.2009 (scalar; the per-channel
            # (0.2023, 0.1994, 0.2010) is commented out there); RandomCrop(32, padding=3, 'edge') + flip.
            "cifar10": RecipeEntry(
                Normalization(_CIFAR_MEAN, (0.2009,)),
                Augmentation(random_crop=True, padding=3, padding_mode="edge", hflip=True),
                "L_inf-dist-net-v2 dataset.py (linfdist.md §1d)",
            ),
            # dataset.py: TinyImageNet mean (0.4802, 0.4481, 0.3975), std 0.2276 (scalar);
            # RandomCrop(64, padding=4, padding_mode='edge') + RandomHorizontalFlip.
            "tinyimagenet": RecipeEntry(
                Normalization(_TINY_MEAN, (0.2276,)),
                Augmentation(random_crop=True, padding=4, padding_mode="edge", hflip=True),
                "L_inf-dist-net-v2 dataset.py",
            ),
        },
        "ℓ∞-distance nets v2: per-channel mean, one scalar std, edge-padded crops",
    ),
    "fastibp": Recipe(
        "fastibp",
        {
            # Fast-Certified-Robust-Training datasets.py: MNIST mean 0, std 1, ToTensor only
            # (fastibp.md §1.7).
            "mnist": RecipeEntry(RAW, NO_AUGMENTATION, "Fast-Certified-Robust-Training datasets.py"),
            # datasets.py: Normalize(cifar10_mean, cifar10_std);
            # RandomHorizontalFlip + RandomCrop(32, 2, padding_mode='edge').
            "cifar10": RecipeEntry(
                Normalization(_CIFAR_MEAN, _CIFAR_STD),
                Augmentation(random_crop=True, padding=2, padding_mode="edge", hflip=True),
                "Fast-Certified-Robust-Training datasets.py (fastibp.md §1.7)",
            ),
            # datasets.py: tinyimagenet mean/std as below; RandomHorizontalFlip + RandomCrop(64, 4, 'edge').
            "tinyimagenet": RecipeEntry(
                Normalization(_TINY_MEAN, _TINY_STD),
                Augmentation(random_crop=True, padding=4, padding_mode="edge", hflip=True),
                "Fast-Certified-Robust-Training datasets.py (fastibp.md §1.7)",
            ),
        },
        "fast IBP (Shi et al. NeurIPS'21): per-channel mean and std, edge-padded crops",
    ),
    "lirpa": Recipe(
        "lirpa",
        {
            # auto_LiRPA examples/vision/{simple,cifar}_training.py: MNIST ToTensor only, mean 0 std 1.
            "mnist": RecipeEntry(RAW, NO_AUGMENTATION, "auto_LiRPA examples/vision/cifar_training.py"),
            # cifar_training.py: Normalize(mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010]);
            # RandomHorizontalFlip + RandomCrop(32, 4, padding_mode='edge').
            "cifar10": RecipeEntry(
                Normalization(_CIFAR_MEAN, _CIFAR_STD),
                Augmentation(random_crop=True, padding=4, padding_mode="edge", hflip=True),
                "auto_LiRPA examples/vision/cifar_training.py (CROWN-IBP)",
            ),
            # tinyimagenet_training.py: same mean/std as fastibp; train RandomHorizontalFlip +
            # RandomCrop(56) (no padding), test CenterCrop(56): inputs are 3x56x56.
            "tinyimagenet": RecipeEntry(
                Normalization(_TINY_MEAN, _TINY_STD),
                Augmentation(random_crop=True, padding=0, hflip=True, crop_size=56),
                "auto_LiRPA examples/vision/tinyimagenet_training.py",
            ),
            # imagenet_training.py: Normalize(mean=[0.4815, 0.4578, 0.4082], std=[0.2153, 0.2111, 0.2121]);
            # train RandomHorizontalFlip + RandomCrop(56, padding_mode='edge') (no padding), test
            # CenterCrop(56): inputs are 3x56x56, as for Tiny-ImageNet.
            "imagenet64": RecipeEntry(
                Normalization(_IMAGENET64_MEAN, _IMAGENET64_STD),
                Augmentation(random_crop=True, padding=0, hflip=True, crop_size=56),
                "auto_LiRPA examples/vision/imagenet_training.py",
            ),
        },
        "auto_LiRPA CROWN-IBP examples: per-channel mean and std",
    ),
    "gloro": Recipe(
        "gloro",
        {
            # gloro tools/README.md (MNIST 1.58 command): augmentation none; inputs in [0, 1].
            "mnist": RecipeEntry(RAW, NO_AUGMENTATION, "gloro tools/README.md (gloro.md)"),
            # hu23 LiResNet train.py: inputs in [0, 1] (model subtracts 0.5); CIFAR RandomCrop(32, 4) + flip,
            # torchvision's default zero padding.
            "cifar10": RecipeEntry(
                RAW,
                Augmentation(random_crop=True, padding=4, padding_mode="constant", hflip=True),
                "hu23 LiResNet train.py (gloro.md 'Aug:')",
            ),
            # hu23: Tiny RandomCrop(64, 8) + flip (from tiny200.npz).
            "tinyimagenet": RecipeEntry(
                RAW,
                Augmentation(random_crop=True, padding=8, padding_mode="constant", hflip=True),
                "hu23 LiResNet train.py (gloro.md 'Aug:')",
            ),
        },
        "GloRo / LiResNet (ℓ2): [0, 1] inputs, zero-padded crops",
    ),
    "lipnorm": Recipe(
        "lipnorm",
        {
            # run_norm_regularization.sh: CIFAR-10 ToTensor only, RandomCrop(32, pad 4) + flip.
            "cifar10": RecipeEntry(
                RAW,
                Augmentation(random_crop=True, padding=4, padding_mode="constant", hflip=True),
                "lipnorm run_norm_regularization.sh (lipnorm.md)",
            ),
        },
        "ℓ1-norm regularisation: CIFAR-10 in [0, 1], zero-padded crop + flip",
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(
            f"unknown normalization recipe {name!r}; expected one of {', '.join(sorted(RECIPES))} "
            "or a certcore.data.Normalization"
        ) from None
