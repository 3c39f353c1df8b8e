"""In-memory data for the trainer: certcore's tensor path, subsets, DDP shards, synthetic data.

Training images stay raw (uint8) in memory; each batch is augmented and normalised by the dataset's
``linfdist`` recipe (``DatasetInfo.batch_transform``), with a generator that depends only on
``(seed, epoch, rank)`` so a resumed run sees the same batches. Test images are normalised once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from certcore.data import DatasetInfo, dataset_info, load_tensors
from certcore.distributed import make_sampler, rank, world_size
from certcore.seeding import epoch_generator

__all__ = ["TensorData", "load_data", "synthetic_data"]


@dataclass
class TensorData:
    info: DatasetInfo
    x_train: Tensor  # raw pixels (N, C, H, W), uint8
    y_train: Tensor
    x_test: Tensor  # normalised float32
    y_test: Tensor
    synthetic: bool = False

    @property
    def data_min(self) -> Tensor:
        return self.info.data_min

    @property
    def data_max(self) -> Tensor:
        return self.info.data_max

    def eps(self, eps_pixels: float) -> float:
        """Pixel-space ε → normalised ε (``ε / std``; the std is one scalar per dataset)."""
        return float(self.info.eps_to_normalized(eps_pixels))

    def iters_per_epoch(self, batch_size: int) -> int:
        """Batches per epoch on each rank (the last one may be short, as in the v2 DataLoader)."""
        per_rank = math.ceil(len(self.y_train) / world_size())
        return math.ceil(per_rank / self.local_batch(batch_size))

    @staticmethod
    def local_batch(batch_size: int) -> int:
        w = world_size()
        if batch_size % w:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of processes ({w})")
        return batch_size // w

    def train_batches(
        self, batch_size: int, epoch: int, seed: int, augment: bool, device: torch.device | str
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's shuffled, augmented, normalised training batches of one epoch."""
        n = len(self.y_train)
        if world_size() > 1:
            sampler = make_sampler(range(n), seed=seed)  # one seed for every rank
            sampler.set_epoch(epoch)
            order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        else:
            order = torch.randperm(n, generator=epoch_generator(seed, epoch))
        aug_gen = epoch_generator((seed + 7919 * rank()) % 2**32, epoch)
        transform = self.info.batch_transform(augment=augment)
        bs = self.local_batch(batch_size)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            x = transform(self.x_train[idx], generator=aug_gen)
            yield x.to(device, non_blocking=True), self.y_train[idx].to(device, non_blocking=True)

    def train_eval_batches(
        self, batch_size: int, limit: int | None, device: torch.device | str
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's share of the (first ``limit``) training images, without augmentation."""
        n = len(self.y_train) if limit is None else min(limit, len(self.y_train))
        transform = self.info.batch_transform(augment=False)
        idx_all = torch.arange(rank(), n, world_size())
        for start in range(0, len(idx_all), batch_size):
            idx = idx_all[start : start + batch_size]
            yield transform(self.x_train[idx]).to(device), self.y_train[idx].to(device)

    def test_batches(
        self, batch_size: int, limit: int | None, device: torch.device | str
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's share of the (first ``limit``) test images."""
        n = len(self.y_test) if limit is None else min(limit, len(self.y_test))
        idx_all = torch.arange(rank(), n, world_size())
        for start in range(0, len(idx_all), batch_size):
            idx = idx_all[start : start + batch_size]
            yield self.x_test[idx].to(device), self.y_test[idx].to(device)


def _subset(x: Tensor, y: Tensor, n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    if n is None or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    idx, _ = idx.sort()
    return x[idx], y[idx]


def load_data(
    dataset: str,
    *,
    data_dir: str | os.PathLike | None,
    normalization: str = "linfdist",
    train_subset: int | None = None,
    seed: int = 0,
) -> TensorData:
    """MNIST / CIFAR-10 (or any certcore dataset) in memory, normalised by ``normalization``.

    ``train_subset``: a fixed random subset of N training images (chosen by ``seed``).
    """
    info = dataset_info(dataset, normalization)
    if not info.normalization.scalar_std:
        raise ValueError(
            f"normalization {normalization!r} has per-channel stds {info.normalization.std}; ℓ∞-dist nets "
            "need one scalar std so that an ℓ∞ ball stays a ball"
        )
    x_train, y_train = load_tensors(dataset, "train", data_dir=data_dir)
    x_train, y_train = _subset(x_train, y_train, train_subset, seed)
    x_test, y_test = load_tensors(dataset, "test", data_dir=data_dir, normalization=normalization)
    return TensorData(info, x_train, y_train, x_test, y_test)


def synthetic_data(
    dataset: str,
    *,
    n_train: int = 512,
    n_test: int = 256,
    normalization: str = "linfdist",
    seed: int = 0,
    noise: float = 0.05,
) -> TensorData:
    """Generated images of ``dataset``'s shape: one random prototype per class plus pixel noise.

    Learnable (and certifiable at small ε) in a few epochs; for smoke runs and tests, never the network.
    """
    info = dataset_info(dataset, normalization)
    k = info.num_classes
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand((k, *info.input_shape), generator=g)

    def make(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(n) % k
        y = y[torch.randperm(n, generator=g)]
        x = protos[y] + noise * torch.randn((n, *info.input_shape), generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    x_test = info.batch_transform(augment=False)(x_test)
    return TensorData(info, x_train, y_train, x_test, y_test, synthetic=True)
