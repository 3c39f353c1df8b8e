"""Seeding and RNG state capture for reproducible, resumable runs.

Three sources of randomness are covered: Python's ``random``, NumPy's legacy global generator and
torch's (CPU, and every CUDA device where CUDA is initialised). :func:`rng_state` returns them as plain
types and tensors only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``.

Data order should not come from the global state at all: :func:`epoch_generator` gives a generator
that depends only on ``(seed, epoch)``, so epoch ``k`` sees the same order whether or not the run was
interrupted before it.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["epoch_generator", "rng_state", "seed_everything", "set_rng_state"]

_MAX_SEED = 2**32 - 1  # NumPy's legacy seeding accepts [0, 2**32)
_RNG_KEYS = ("python", "numpy", "torch", "cuda")


def _check_seed(seed: int, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"{what} must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) <= _MAX_SEED:
        raise ValueError(f"{what} must lie in [0, 2**32 - 1], got {seed}")
    return int(seed)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all CUDA devices too) with ``seed``.

    ``deterministic=True`` also asks torch for deterministic kernels (``use_deterministic_algorithms``,
    cuDNN without benchmarking); ops that have no deterministic kernel then raise.
    """
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global generator is what we seed)
    torch.manual_seed(seed)  # seeds every CUDA device as well
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def rng_state() -> dict[str, Any]:
    """The current state of every global RNG, as plain types and tensors."""
    version, internal, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned.

    CUDA states are restored where the same number of devices is present; otherwise (e.g. a GPU
    checkpoint resumed on a CPU) they are skipped with a warning, since CPU-side results do not depend
    on them.
    """
    if not isinstance(state, dict) or set(state) != set(_RNG_KEYS):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not an RNG state: expected keys {list(_RNG_KEYS)}, got {got}")
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state["cuda"]
    if cuda_states:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:
            warnings.warn(
                f"the saved RNG state covers {len(cuda_states)} CUDA device(s) but "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} are present here; "
                "CUDA RNG states were not restored",
                stacklevel=2,
            )


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU ``torch.Generator`` whose stream depends only on ``(seed, epoch)``.

    The pair is mixed by NumPy's ``SeedSequence`` (so ``(1, 0)`` and ``(0, 1)`` give unrelated
    streams). Pass it as ``DataLoader(..., generator=epoch_generator(seed, epoch))`` to fix the data
    order (and the workers' base seed) of each epoch independently of anything that ran before.
    """
    seed = _check_seed(seed)
    if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
    words = np.random.SeedSequence([seed, int(epoch)]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed((int(words[0]) << 32) | int(words[1]))
    return generator
