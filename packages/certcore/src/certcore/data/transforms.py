"""Batched tensor transforms: random crop (edge or zero padding), horizontal flip, centre crop, normalize.

They work on a whole ``(N, C, H, W)`` batch at once, on any device, and with any dtype (uint8 included),
so a training loop can keep the dataset as one uint8 tensor and augment on the GPU. The per-item datasets
of :func:`certcore.data.load_dataset` call the same functions on a batch of one, so there is a single
implementation of each transform.

Randomness comes from ``generator`` when given (it must live on the batch's device, or be a CPU generator
for a CPU batch), else from torch's global RNG, so ``torch.manual_seed`` makes a run repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from certcore.data.recipes import Augmentation, Normalization, PaddingMode


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images shaped (N, C, H, W), got shape {tuple(x.shape)}")


def _randint(high: int, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(0, high, (n,), device=device, generator=generator)


def crop_at(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    size: tuple[int, int],
    padding: int,
    padding_mode: PaddingMode = "edge",
) -> torch.Tensor:
    """Crop each image ``n`` of ``x`` at offset ``(top[n], left[n])`` of the image padded by ``padding``.

    Same result as torchvision's ``pad(img, padding, padding_mode)`` followed by a crop at that offset, but
    without materialising the padded batch: edge padding clamps the source indices, constant padding
    writes zeros where they fall outside.
    """
    _check_batch(x)
    if padding_mode not in ("edge", "constant"):
        raise ValueError(f"padding_mode must be 'edge' or 'constant', got {padding_mode!r}")
    n, c, h, w = x.shape
    th, tw = size
    rows = top.to(x.device).view(n, 1) - padding + torch.arange(th, device=x.device).view(1, th)  # (N, th)
    cols = left.to(x.device).view(n, 1) - padding + torch.arange(tw, device=x.device).view(1, tw)  # (N, tw)
    # Two separable gathers (rows, then columns) are about twice as fast as one 4-D advanced index.
    out = torch.gather(x, 2, rows.clamp(0, h - 1).view(n, 1, th, 1).expand(n, c, th, w))
    out = torch.gather(out, 3, cols.clamp(0, w - 1).view(n, 1, 1, tw).expand(n, c, th, tw))
    if padding_mode == "constant" and padding > 0:
        inside = ((rows >= 0) & (rows < h)).view(n, 1, th, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, tw)
        out = out * inside.to(out.dtype)
    return out


def random_crop(
    x: torch.Tensor,
    size: int | None = None,
    padding: int = 0,
    padding_mode: PaddingMode = "edge",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchvision ``RandomCrop(size, padding, padding_mode=...)`` with an independent offset per image."""
    _check_batch(x)
    n, _, h, w = x.shape
    th, tw = (h, w) if size is None else (size, size)
    if th > h + 2 * padding or tw > w + 2 * padding:
        raise ValueError(
            f"crop size {th}x{tw} is larger than the padded image {h + 2 * padding}x{w + 2 * padding}"
        )
    top = _randint(h + 2 * padding - th + 1, n, x.device, generator)
    left = _randint(w + 2 * padding - tw + 1, n, x.device, generator)
    return crop_at(x, top, left, (th, tw), padding, padding_mode)


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability ``p`` (torchvision ``RandomHorizontalFlip``)."""
    _check_batch(x)
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision ``CenterCrop(size)`` (top = round((H - size) / 2)) for ``size`` <= the image side."""
    _check_batch(x)
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"centre crop {size}x{size} is larger than the image {h}x{w}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def to_float01(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 0..255 → float in [0, 1] (as ``ToTensor``); float input is taken to be in [0, 1] already."""
    if x.dtype == torch.uint8:
        return x.to(dtype).div_(255.0)
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 pixels or float pixels in [0, 1], got dtype {x.dtype}")
    return x.to(dtype)


def stats_tensors(
    normalization: Normalization,
    channels: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` as ``(1, C, 1, 1)`` tensors."""
    mean, std = normalization.per_channel(channels)
    return (
        torch.tensor(mean, dtype=dtype, device=device).view(1, channels, 1, 1),
        torch.tensor(std, dtype=dtype, device=device).view(1, channels, 1, 1),
    )


def normalize(x: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """``(x - mean) / std`` for a float batch in [0, 1]."""
    _check_batch(x)
    mean, std = stats_tensors(normalization, x.shape[1], x.device, x.dtype)
    return (x - mean) / std


def denormalize(x: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """Back to pixel space: ``x * std + mean``."""
    _check_batch(x)
    mean, std = stats_tensors(normalization, x.shape[1], x.device, x.dtype)
    return x * std + mean


@dataclass(frozen=True)
class BatchTransform:
    """Pixels (uint8 or [0, 1] float, ``(N, C, H, W)``) → augmented, normalized float batch.

    Order: random crop / centre crop and flip in pixel space (so zero padding means black pixels),
    then ``/255`` and normalization. ``augmentation=None`` (or ``train=False``) applies only the centre
    crop a recipe with a smaller ``crop_size`` needs.
    """

    normalization: Normalization
    augmentation: Augmentation | None = None
    train: bool = True
    dtype: torch.dtype = torch.float32

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x)
        aug = self.augmentation
        if aug is not None:
            if self.train and aug.random_crop:
                x = random_crop(x, aug.crop_size, aug.padding, aug.padding_mode, generator)
            elif aug.crop_size is not None and aug.crop_size != x.shape[-1]:
                x = center_crop(x, aug.crop_size)
            if self.train and aug.hflip:
                x = random_hflip(x, generator=generator)
        return normalize(to_float01(x, self.dtype), self.normalization)
