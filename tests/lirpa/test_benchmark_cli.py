"""benchmarks/lirpa.py: the CLI, the original's reference figures, and tiny real runs.

The run that needs the bound engine is skipped while ``lirpa.BoundedModule`` does not exist; the
``forward`` method (the plain model call) exercises the same subprocess / timing / memory harness
without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "lirpa.py"
HAS_ENGINE = hasattr(importlib.import_module("lirpa"), "BoundedModule")
needs_engine = pytest.mark.skipif(not HAS_ENGINE, reason="lirpa.BoundedModule (the bound engine) is absent")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lirpa_benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def _json_rows(stdout: str) -> list[dict]:
    return [row for row in map(json.loads, stdout.splitlines()) if "model" in row]


def test_help():
    proc = _run("--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--models", "--methods", "--repeats", "--threads", "--device", "--json", "--quick",
                 "--timeout", "--memory-limit-gb"):  # fmt: skip
        assert flag in proc.stdout


def test_original_figures_are_the_reference_ones(bench):
    orig = bench.ORIGINAL_0_7_1
    # reference/lirpa.md §8.3 (a): mlp_3layer, batch 256, eps 0.1
    assert orig[("mlp_3layer", "IBP", 256)] == {
        "warmup": 0.006, "min": 0.0045, "median": 0.0053, "grad_min": 0.0076, "min_torch_2_13": 0.0126,
    }  # fmt: skip
    assert orig[("mlp_3layer", "CROWN-IBP", 256)]["min"] == 0.038
    assert orig[("mlp_3layer", "CROWN-IBP", 256)]["median"] == 0.045
    assert orig[("mlp_3layer", "CROWN-IBP", 256)]["grad_min"] == 0.064
    assert orig[("mlp_3layer", "CROWN", 256)]["min"] == 0.743
    assert orig[("mlp_3layer", "CROWN", 256)]["median"] == 0.759
    assert orig[("mlp_3layer", "alpha-CROWN", 256)]["min"] == 127.5
    assert orig[("mlp_3layer", "alpha-CROWN", 256)]["median"] == 131.0
    # §8.3 (b): cnn_7layer_bn, eps 2/255
    assert orig[("cnn_7layer_bn", "IBP", 64)]["min"] == 0.425
    assert orig[("cnn_7layer_bn", "IBP", 64)]["grad_min"] == 0.570
    assert orig[("cnn_7layer_bn", "CROWN-IBP", 64)]["min"] == 8.24
    assert orig[("cnn_7layer_bn", "CROWN-IBP", 64)]["grad_min"] == 15.75
    assert orig[("cnn_7layer_bn", "CROWN", 1)]["min"] == 87.5
    assert orig[("cnn_7layer_bn", "CROWN", 2)]["min"] == 130.5
    assert orig[("cnn_7layer_bn", "CROWN", 8)]["min"] == "OOM"
    # every original row is a configuration the script can run (CROWN batch 2 only on request)
    setups = {s.zoo_name: s for s in bench.SETUPS.values()}
    for model, method, _batch in orig:
        assert method in setups[model].batches
    assert setups["cnn_7layer_bn"].eps == 2 / 255 and setups["mlp_3layer"].eps == 0.1


def test_plan_follows_the_protocol(bench):
    def plan(*argv):
        args = types.SimpleNamespace(
            models=["mlp", "cnn7", "resnet"], methods=bench.METHODS, repeats=5, budget=60.0, threads=2,
            device="cpu", conv_mode="patches", memory_limit_gb=22.0, alpha_iterations=20, alpha_lr=0.1,
            quick="quick" in argv,
        )  # fmt: skip
        return {(c.model, c.method, c.batch) for c in bench.plan(args)}

    full = plan()
    assert {("mlp", m, 256) for m in bench.METHODS} <= full
    assert {
        ("cnn7", "IBP", 64),
        ("cnn7", "CROWN-IBP", 64),
        ("cnn7", "CROWN", 1),
        ("cnn7", "CROWN", 8),
    } <= full
    assert ("cnn7", "alpha-CROWN", 1) in full and ("resnet", "IBP", 64) in full
    assert max(batch for _, _, batch in plan("quick")) == bench.QUICK_MAX_BATCH


def test_missing_engine_and_failures_are_named(bench):
    with pytest.raises(bench.EngineMissing, match="no BoundedModule, BoundedTensor, PerturbationLpNorm"):
        bench.load_engine(types.SimpleNamespace(__file__="lirpa/__init__.py"))
    fake = types.SimpleNamespace(BoundedModule=1, BoundedTensor=2, PerturbationLpNorm=3)
    assert bench.load_engine(fake) is fake
    assert bench.failure_status(MemoryError()) == "OOM"
    alloc = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    assert bench.failure_status(alloc) == "OOM"
    assert bench.failure_status(ValueError("bad shape\nmore")) == "error: ValueError: bad shape"


def test_memory_limit_is_capped_by_what_the_machine_has(bench):
    assert 0 < bench.address_space_limit(0.5) <= 2**29
    if Path("/proc/meminfo").exists():
        assert bench.address_space_limit(1e6) < 1e6 * 2**30  # capped at mapped + MemAvailable


@pytest.mark.skipif(HAS_ENGINE, reason="only meaningful while the engine is absent")
def test_without_engine_bound_methods_exit_with_a_clear_message():
    proc = _run("--models", "mlp", "--methods", "IBP", "--quick", timeout=60)
    assert proc.returncode != 0
    assert "needs the lirpa bound engine" in proc.stderr and "BoundedModule" in proc.stderr


def test_harness_runs_the_plain_forward_without_engine():
    proc = _run("--models", "mlp", "--methods", "forward", "--quick", "--json", "--no-grad-column")
    assert proc.returncode == 0, proc.stderr
    (row,) = _json_rows(proc.stdout)
    assert (row["model"], row["method"], row["batch"], row["status"]) == ("mlp_3layer", "forward", 8, "ok")
    assert row["seconds"] > 0 and row["peak_mb"] >= 0 and row["repeats"] == 1
    assert row["peak_how"] and "grad_seconds" not in row
    assert 0 < row["memory_limit_gb"] <= 22


@needs_engine
def test_tiny_real_run():
    proc = _run("--models", "mlp", "--methods", "IBP", "--quick", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    (row,) = _json_rows(proc.stdout)
    assert {"model", "method", "batch", "seconds", "peak_mb"} <= set(row)
    assert (row["model"], row["method"], row["status"]) == ("mlp_3layer", "IBP", "ok"), row
    assert row["seconds"] > 0 and row["peak_mb"] >= 0
    assert row["grad_status"] == "ok" and row["grad_seconds"] > 0
    assert row["original_seconds"] is None  # quick caps the batch at 8; the original is at 256
