"""Run one table's profile: run directory, experiment, ``results.json``, ``REPORT.md``, verdict.

A run directory holds ``spec.json`` (the spec and the run's identity: table, profile, seed,
eval-only checkpoint), the experiment's own files (``train.log``, ``test.log``, checkpoints, ...),
``results.json`` and ``REPORT.md``. A directory that already holds something is never written
into unless ``resume=True`` and it holds the same run; on resume an earlier ``results.json`` is kept
as ``results.<timestamp>.json``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce import registry, report, verify
from reproduce.spec import Profile, ReproduceError, RunContext, TableSpec, to_jsonable

Experiment = Callable[[TableSpec, Profile, RunContext], Mapping[str, float]]
SCHEMA_VERSION = 1
DIST_NAMES = {"gloro_torch": "gloro-torch"}


class ExperimentError(ReproduceError):
    """The experiment raised or returned something that is not a metrics dict."""


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    results: dict[str, Any]
    checks: list[verify.Check]

    @property
    def passed(self) -> bool:
        return not verify.failures(self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def _now() -> _dt.datetime:
    return _dt.datetime.now().astimezone()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def resolve_experiment(spec: TableSpec) -> Experiment:
    """Import ``spec.experiment`` (``"module:function"``), with a clear error when it is absent."""
    module_name, _, attr = spec.experiment.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        dist = DIST_NAMES.get(spec.package, spec.package)
        raise ReproduceError(
            f"table {spec.id}: cannot import its experiment module {module_name!r} ({exc}). "
            f"Is the package installed? pip install -e packages/{spec.package}  (distribution {dist})"
        ) from exc
    try:
        function = getattr(module, attr)
    except AttributeError:
        raise ReproduceError(f"table {spec.id}: module {module_name!r} has no function {attr!r} "
                             f"(spec.experiment = {spec.experiment!r})") from None
    if not callable(function):
        raise ReproduceError(f"table {spec.id}: {spec.experiment} is not callable")
    return function


def resolve_device(device: str) -> tuple[str, str]:
    """``auto`` -> ``cuda`` where available, else ``cpu``; returns (device, description)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ReproduceError(f"invalid --device {device!r} ({exc}); use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ReproduceError(f"--device {device}: CUDA is not available here; use --device cpu")
        index = parsed.index or 0
        if index >= torch.cuda.device_count():
            raise ReproduceError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        return device, f"{device} ({torch.cuda.get_device_name(index)})"
    if parsed.type == "cpu":
        return device, f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return device, device


def versions(spec: TableSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("torch", "torchvision", "numpy", "certcore", DIST_NAMES.get(spec.package, spec.package),
                 "certkit-reproduce"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import torch

        out["cuda"] = torch.version.cuda
    except ImportError:  # pragma: no cover - torch is a dependency
        out["cuda"] = None
    return out


def git_state() -> dict[str, Any]:
    """Commit and dirtiness of the checkout ``reproduce`` comes from, else of the working directory
    (an installed copy, as nox makes, is outside any checkout); None for both outside git."""

    def git(where: Path, *args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    for where in (Path(__file__).resolve().parent, Path.cwd()):
        commit = git(where, "rev-parse", "HEAD")
        if commit:
            dirty = git(where, "status", "--porcelain", "--untracked-files=no")
            return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}
    return {"commit": None, "dirty": None}


def default_run_dir(spec: TableSpec, profile: str, eval_only: bool, root: Path) -> Path:
    stamp = _now().strftime("%Y%m%d-%H%M%S")
    base = root / f"{spec.id}-{profile}{'-eval' if eval_only else ''}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def _identity(spec: TableSpec, profile: str, seed: int, eval_only: Path | None) -> dict[str, Any]:
    return {"table_id": spec.id, "profile": profile, "seed": seed,
            "eval_only": None if eval_only is None else str(eval_only)}


def _read_identity(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "spec.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("run")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ReproduceError(f"{path} is not a readable spec.json ({exc}); choose another --out") from None


def prepare_run_dir(spec: TableSpec, profile: str, seed: int, out: Path | None, resume: bool,
                    eval_only: Path | None, runs_root: Path) -> tuple[Path, bool]:
    """Create or reopen the run directory; returns (path, resumed). Never writes into another run."""
    if out is None:
        if resume:
            raise ReproduceError("--resume needs --out RUN_DIR: the run directory to continue")
        run_dir = default_run_dir(spec, profile, eval_only is not None, runs_root)
        run_dir.mkdir(parents=True)
        return run_dir, False
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise ReproduceError(f"--out {run_dir} exists and is not a directory")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, False
    held = _read_identity(run_dir)
    wanted = _identity(spec, profile, seed, eval_only)
    if held is None:
        raise ReproduceError(f"--out {run_dir} is not empty and holds no reproduce run (no spec.json); "
                             f"nothing was written there. Choose an empty or new directory.")
    if held != wanted:
        diff = ", ".join(f"{k}: {held.get(k)!r} there, {v!r} asked" for k, v in wanted.items()
                         if held.get(k) != v)
        raise ReproduceError(f"--out {run_dir} already holds a different run ({diff}); nothing was written "
                             f"there. Choose another --out.")
    if not resume:
        raise ReproduceError(f"--out {run_dir} already holds this run ({spec.id}, {profile}); continue it "
                             f"with --resume or choose another --out. Nothing was written there.")
    return run_dir, True


def canonical_command(spec: TableSpec, profile: str, run_dir: Path, device: str, seed: int,
                      data_dir: Path | None, eval_only: Path | None) -> list[str]:
    cmd = ["reproduce", "run", spec.id, "--profile", profile]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    cmd += ["--out", str(run_dir), "--device", device, "--seed", str(seed)]
    if eval_only is not None:
        cmd += ["--eval-only", str(eval_only)]
    return cmd


def _clean_metrics(spec: TableSpec, raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ExperimentError(f"{spec.experiment} returned {type(raw).__name__}; "
                              f"it must return a dict of metric name -> float")
    metrics: dict[str, float] = {}
    for name, value in raw.items():
        try:
            metrics[str(name)] = float(value)
        except (TypeError, ValueError):
            raise ExperimentError(f"{spec.experiment} returned metric {name!r} = {value!r}, "
                                  f"which is not a number") from None
    return metrics


def run_table(table: str | TableSpec, profile: str = "full", *, data_dir: Path | None = None,
              out: Path | None = None, resume: bool = False, device: str = "auto",
              eval_only: Path | None = None, seed: int | None = None, runs_root: Path = Path("runs"),
              echo: Callable[[str], None] = print) -> RunOutcome:
    """Run ``profile`` of ``table`` and write results.json and REPORT.md; see the module docstring."""
    spec = table if isinstance(table, TableSpec) else registry.get(table)
    prof = spec.profile(profile)
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise ReproduceError(f"--data-dir {data_dir} does not exist or is not a directory; pass the "
                                 f"folder that holds the datasets in torchvision's layout (e.g. MNIST/raw/)")
        data_dir = data_dir.resolve()
    if eval_only is not None:
        eval_only = Path(eval_only).expanduser()
        if not eval_only.is_file():
            raise ReproduceError(f"--eval-only {eval_only}: no such checkpoint file")
        eval_only = eval_only.resolve()
    if seed is None:
        seed = int(getattr(prof.recipe, "seed", 0))
    device, device_name = resolve_device(device)
    experiment = resolve_experiment(spec)
    run_dir, resumed = prepare_run_dir(spec, profile, seed, out, resume, eval_only, Path(runs_root))
    command = canonical_command(spec, profile, run_dir, device, seed, data_dir, eval_only)

    started = _now()
    if not resumed:
        write_json(run_dir / "spec.json", {"run": _identity(spec, profile, seed, eval_only),
                                           "created_at": started.isoformat(timespec="seconds"),
                                           "command": shlex.join(command), "table": spec.to_json()})
    elif (run_dir / "results.json").exists():
        previous = run_dir / "results.json"
        stamp = _dt.datetime.fromtimestamp(previous.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        os.replace(previous, run_dir / f"results.{stamp}.json")

    echo(f"reproduce: {spec.id} [{profile}]{' (resumed)' if resumed else ''} -> {run_dir}")
    echo(f"  source:  {spec.source.short()}")
    echo(f"  device:  {device_name}; this profile: {prof.hardware or '?'}, {prof.time_hint or '?'}")

    ctx = RunContext(run_dir=run_dir, data_dir=data_dir, device=device, resume=resumed,
                     eval_only=eval_only, seed=seed)
    t0 = time.perf_counter()
    try:
        raw = experiment(spec, prof, ctx)
    except Exception as exc:
        failure = run_dir / f"failure.{_now().strftime('%Y%m%d-%H%M%S')}.txt"
        failure.write_text(traceback.format_exc(), encoding="utf-8")
        raise ExperimentError(
            f"{spec.experiment} failed: {type(exc).__name__}: {exc}\n"
            f"The run directory {run_dir} is kept (traceback in {failure.name}); continue it with:\n"
            f"  {shlex.join([*command, '--resume'])}") from exc
    wall = time.perf_counter() - t0
    metrics = _clean_metrics(spec, raw)
    checks = verify.check_metrics(prof.expected, metrics)

    results = {
        "schema": SCHEMA_VERSION,
        "table_id": spec.id,
        "profile": profile,
        "status": verify.status(checks),
        "metrics": {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()},
        "expected": {k: {"value": e.value, "tolerance": e.tolerance} for k, e in prof.expected.items()},
        "paper": dict(spec.paper),
        "checks": [c.to_json() for c in checks],
        "command": shlex.join(command),
        "argv": list(sys.argv),
        "device": device,
        "device_name": device_name,
        "seed": seed,
        "data_dir": None if data_dir is None else str(data_dir),
        "eval_only": None if eval_only is None else str(eval_only),
        "synthetic_data": prof.synthetic_data,
        "resumed": resumed,
        "wall_time_s": round(wall, 3),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": _now().isoformat(timespec="seconds"),
        "profile_hardware": prof.hardware,
        "profile_time_hint": prof.time_hint,
        "full_hardware": spec.profiles["full"].hardware,
        "full_time_hint": spec.profiles["full"].time_hint,
        "versions": versions(spec),
        "git": git_state(),
        "recipe": to_jsonable(prof.recipe),
    }
    write_json(run_dir / "results.json", results)
    report_path = report.write_report(run_dir)

    for line in verify.copypaste_lines(spec.id, profile, metrics):
        echo(line)
    echo(f"  report:  {report_path}")
    outcome = RunOutcome(run_dir=run_dir, results=results, checks=checks)
    if outcome.passed:
        echo(f"OK: {spec.id} [{profile}] {results['status']} ({len(checks)} metrics, {wall:.1f} s)")
    else:
        echo("FAILED: " + verify.failure_message(spec.id, profile, checks))
    return outcome
