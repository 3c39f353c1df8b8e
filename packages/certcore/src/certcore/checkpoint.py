"""Atomic, self-describing checkpoints.

A checkpoint is one ``torch.save`` file holding a dict::

    format     "certcore.checkpoint/1"
    epoch      the last finished epoch (0-based)
    spec       the run's configuration (plain types), checked on resume
    versions   {"torch", "certcore", "python"} that wrote it
    model      the state dict of the unwrapped model (no ``module.`` prefix)
    optimizer, scheduler   their state dicts, or None
    rng        :func:`certcore.seeding.rng_state` at save time
    extra      anything else the caller stored (plain types and tensors), or None

It is written to a temporary file in the same directory, fsynced, then moved over ``path`` with
``os.replace``: a crash or an error while saving leaves the previous checkpoint as it was. It is read
with ``torch.load(weights_only=True)``, so loading never runs code from the file.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from certcore.distributed import unwrap_model
from certcore.seeding import rng_state, set_rng_state

__all__ = ["FORMAT", "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "certcore.checkpoint/1"
_KEYS = {"format", "epoch", "spec", "versions", "model", "optimizer", "scheduler", "rng", "extra"}
_PLAIN = (str, int, float, bool, type(None))
_DDP_PREFIX = "module."


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit what it is loaded into."""


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` read besides the state it restored."""

    path: Path
    epoch: int
    spec: dict[str, Any]
    versions: dict[str, str]
    extra: Any


def _check_plain(value: Any, where: str, *, tensors: bool) -> None:
    """Raise ``TypeError`` unless ``value`` is built of dicts with str keys, lists, tuples and scalars."""
    if type(value) in _PLAIN or (tensors and isinstance(value, torch.Tensor)):
        return  # exact types: subclasses (numpy floats, enums, TorchVersion) would not load weights_only
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}; use plain types (str keys)")
            _check_plain(item, f"{where}.{key}", tensors=tensors)
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", tensors=tensors)
        return
    allowed = "dict/list/tuple/str/int/float/bool/None" + ("/Tensor" if tensors else "")
    raise TypeError(f"{where} holds a {type(value).__name__}; checkpoints store only {allowed}")


def _versions() -> dict[str, str]:
    import certcore

    return {  # plain str: torch.__version__ is a TorchVersion, which weights_only loading refuses
        "torch": str(torch.__version__),
        "certcore": str(certcore.__version__),
        "python": platform.python_version(),
    }


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    epoch: int,
    spec: Mapping[str, Any],
    extra: Any = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same directory + ``os.replace``); return its path.

    Under DDP call it on the main process only. ``spec`` must hold plain types (it is compared on
    resume); ``extra`` may also hold tensors.
    """
    path = Path(path)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
    _check_plain(dict(spec), "spec", tensors=False)
    _check_plain(extra, "extra", tensors=True)
    payload = {
        "format": FORMAT,
        "epoch": epoch,
        "spec": dict(spec),
        "versions": _versions(),
        "model": unwrap_model(model).state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_state(),
        "extra": extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path: Path, map_location: Any) -> dict[str, Any]:
    expected = f"a certcore checkpoint (format {FORMAT!r}) written by certcore.checkpoint.save_checkpoint"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; expected {expected}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt zip, truncated file, foreign pickle, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt, truncated, or not a torch file: {reason}); "
            f"expected {expected}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict):
            found = f"a dict with keys {sorted(map(str, payload))[:8]}"
            if isinstance(payload.get("format"), str):
                found = f"format {payload['format']!r}"
        else:
            found = f"a {type(payload).__name__}"
        raise CheckpointError(
            f"{path} is a torch file but not a certcore checkpoint: found {found}; expected {expected}"
        )
    missing = sorted(_KEYS - set(payload))
    if missing:
        raise CheckpointError(f"{path} is an incomplete certcore checkpoint: missing {missing}")
    return payload


def _flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _spec_differences(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    have, want = _flatten(stored), _flatten(expected)
    lines = [
        f"{key}: checkpoint {have[key]!r}, expected {want[key]!r}"
        for key in sorted(have.keys() & want.keys())
        if have[key] != want[key]
    ]
    lines += [
        f"{key}: only in the expected spec ({want[key]!r})" for key in sorted(want.keys() - have.keys())
    ]
    lines += [f"{key}: only in the checkpoint ({have[key]!r})" for key in sorted(have.keys() - want.keys())]
    return lines


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    if state and all(key.startswith(_DDP_PREFIX) for key in state):
        return {key[len(_DDP_PREFIX) :]: value for key, value in state.items()}
    return dict(state)


def _model_mismatches(model: nn.Module, state: Mapping[str, Any]) -> list[str]:
    own = model.state_dict()
    lines = []
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [
        f"{key}: checkpoint {tuple(state[key].shape)}, model {tuple(own[key].shape)}"
        for key in own
        if key in state and isinstance(state[key], torch.Tensor) and state[key].shape != own[key].shape
    ]
    for title, items in (
        ("missing from the checkpoint", missing),
        ("not in the model", unexpected),
        ("shape differs", shapes),
    ):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            lines.append(f"{title}: {shown}")
    return lines


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    expected_spec: Mapping[str, Any] | None = None,
    map_location: Any = "cpu",
    restore_rng: bool = True,
) -> Checkpoint:
    """Restore model, optimizer, scheduler and (by default) the RNG states from a checkpoint.

    ``model`` may be wrapped (DDP, ``torch.compile``); ``module.`` prefixes in the file are stripped.
    Raises :class:`CheckpointError` for an unreadable or foreign file, a spec that differs from
    ``expected_spec`` (naming the keys), or a state that does not fit the model (naming keys and
    shapes), an optimizer or a scheduler — all checked before the model is changed.
    """
    path = Path(path)
    payload = _read(path, map_location)
    if expected_spec is not None:
        differences = _spec_differences(payload["spec"], expected_spec)
        if differences:
            raise CheckpointError(f"{path} was written for a different spec:\n  " + "\n  ".join(differences))
    target = unwrap_model(model)
    state = _strip_prefix(payload["model"])
    mismatches = _model_mismatches(target, state)
    if mismatches:
        raise CheckpointError(
            f"{path} does not fit the model {type(target).__name__}:\n  " + "\n  ".join(mismatches)
        )
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None and payload[name] is None:
            raise CheckpointError(
                f"{path} holds no {name} state, but a {type(obj).__name__} was given to restore"
            )
    if optimizer is not None:
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(
                f"{path}: the optimizer state does not fit {type(optimizer).__name__}: {error}"
            ) from error
    if scheduler is not None:
        try:
            scheduler.load_state_dict(payload["scheduler"])
        except (ValueError, KeyError, RuntimeError, TypeError) as error:
            raise CheckpointError(
                f"{path}: the scheduler state does not fit {type(scheduler).__name__}: {error}"
            ) from error
    target.load_state_dict(state)
    if restore_rng:
        set_rng_state(payload["rng"])
    return Checkpoint(path, payload["epoch"], payload["spec"], payload["versions"], payload["extra"])
