"""Data-parallel helpers for runs under ``torchrun`` (gloo on CPU, NCCL on CUDA); no-ops otherwise.

Launch with ``torchrun --nproc-per-node N train.py``; in the script call :func:`init_distributed` once,
build the sampler with :func:`make_sampler` (ONE seed for every rank, checked), call
``sampler.set_epoch(epoch)`` each epoch, wrap the model with :func:`wrap_ddp` and average metrics with
:func:`all_reduce_mean`. Only the main process (rank 0) writes logs and checkpoints.

The original ℓ∞-dist code seeded each rank's ``DistributedSampler`` with ``torch.seed()`` — a
different seed per rank, so the shards overlap and miss samples (linfdist.md §1f). Here the seed is
an argument and :func:`make_sampler` refuses to go on when the ranks disagree about it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "init_distributed",
    "is_main_process",
    "make_sampler",
    "rank",
    "unwrap_model",
    "world_size",
    "wrap_ddp",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``backend`` is None when the run is not distributed."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} must be an integer (set by torchrun)"
        ) from None


def _current_info() -> DistInfo:
    backend = dist.get_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment; a no-op outside torchrun.

    ``backend`` defaults to ``"nccl"`` when CUDA is available and ``"gloo"`` otherwise. Under NCCL the
    process is bound to GPU ``LOCAL_RANK``. Calling it again returns the existing group's info.
    """
    if dist.is_available() and dist.is_initialized():
        return _current_info()
    present = [name for name in _TORCHRUN_VARS if name in os.environ]
    if not present:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return DistInfo(0, 1, 0, None, device)
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"incomplete torchrun environment: {present} set but {missing} missing; "
            "launch with torchrun or set all of RANK, WORLD_SIZE and LOCAL_RANK"
        )
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    rank_, size, local_rank = (_env_int(name) for name in _TORCHRUN_VARS)
    if not 0 <= rank_ < size:
        raise ValueError(f"RANK={rank_} must lie in [0, WORLD_SIZE={size})")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "run at most one process per GPU"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank_, world_size=size)
    return _current_info()


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if _initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, and in a run that is not distributed."""
    return rank() == 0


def barrier() -> None:
    if not _initialized():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _collective_device() -> torch.device:
    if _initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _mean_of(tensor: torch.Tensor) -> torch.Tensor:
    values = tensor.detach().to(_collective_device(), copy=True)
    if not values.is_floating_point():
        values = values.double()
    if _initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values.to(tensor.device)


def all_reduce_mean(
    value: torch.Tensor | Mapping[str, float | torch.Tensor],
) -> torch.Tensor | dict[str, float]:
    """The mean over ranks of a tensor (a new tensor) or of a dict of scalars (a dict of floats).

    Every rank must pass the same dict keys; they are reduced together in one collective.
    Outside a process group the value is returned unchanged (as a copy).
    """
    if isinstance(value, torch.Tensor):
        return _mean_of(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"all_reduce_mean takes a tensor or a dict of scalars, got {type(value).__name__}")
    keys = sorted(value)
    scalars = []
    for key in keys:
        item = value[key]
        if isinstance(item, torch.Tensor):
            if item.numel() != 1:
                raise ValueError(f"all_reduce_mean: {key!r} holds {item.numel()} elements; expected a scalar")
            item = item.item()
        scalars.append(float(item))
    means = _mean_of(torch.tensor(scalars, dtype=torch.float64))
    return dict(zip(keys, means.tolist()))


def _check_same_on_all_ranks(seed: int) -> None:
    """Raise on every rank if the ranks passed different seeds (one MAX all-reduce of ±seed)."""
    if not _initialized():
        return
    both = torch.tensor([seed, -seed], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    high, neg_low = both.tolist()
    if high != -neg_low:
        raise ValueError(
            f"make_sampler: ranks passed different seeds (from {-neg_low} to {high}); every rank must "
            "pass the same seed, or the shards overlap and some samples are never seen"
        )


def make_sampler(
    dataset: Dataset, *, seed: int, shuffle: bool = True, drop_last: bool = False
) -> DistributedSampler:
    """A ``DistributedSampler`` over this process group with ONE seed shared by all ranks.

    Call ``sampler.set_epoch(epoch)`` before each epoch: the order is then a function of
    ``(seed, epoch)``. Works outside a process group too (one replica). Unless ``drop_last``, the
    sampler pads with repeated indices when ``len(dataset)`` is not a multiple of the world size.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    _check_same_on_all_ranks(seed)
    return DistributedSampler(
        dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed, drop_last=drop_last
    )


def wrap_ddp(model: nn.Module, **ddp_kwargs) -> nn.Module:
    """``DistributedDataParallel(model)`` inside a process group (on this rank's GPU under NCCL); else
    ``model`` itself. DDP broadcasts rank 0's parameters and buffers, so every rank starts equal."""
    if not _initialized():
        return model
    if dist.get_backend() == "nccl":
        device = torch.cuda.current_device()
        model = model.to(torch.device("cuda", device))
        ddp_kwargs.setdefault("device_ids", [device])
        ddp_kwargs.setdefault("output_device", device)
    return nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def cleanup() -> None:
    """Leave the process group (if any)."""
    if _initialized():
        dist.destroy_process_group()
