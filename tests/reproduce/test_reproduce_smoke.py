"""Every real spec's ``smoke`` profile runs (CI), and the machinery that runs it works (fake spec).

With no spec registered the parametrized test produces no items at all (rather than a skip or a
failure); ``test_machinery_runs_a_smoke_profile`` keeps the path exercised meanwhile.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from reproduce import registry
from reproduce.cli import main

SMOKE_IDS = sorted(registry.tables())


def shared_data_dir() -> Path | None:
    """``$CERTCORE_DATA``, else ``shared/data`` beside the checkout, where present."""
    candidates = [os.environ.get("CERTCORE_DATA"), Path(__file__).resolve().parents[3] / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def run_smoke(table_id: str, out: Path, data_dir: Path | None):
    args = ["run", table_id, "--profile", "smoke", "--out", str(out), "--device", "cpu"]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    return CliRunner().invoke(main, args, catch_exceptions=False)


if SMOKE_IDS:

    @pytest.mark.parametrize("table_id", SMOKE_IDS)
    def test_smoke_profile_runs(table_id, tmp_path):
        spec = registry.get(table_id)
        data_dir = None if spec.profiles["smoke"].synthetic_data else shared_data_dir()
        if not spec.profiles["smoke"].synthetic_data and data_dir is None:
            pytest.skip(f"{table_id}'s smoke profile needs real {spec.dataset} data; none found")
        result = run_smoke(table_id, tmp_path / "run", data_dir)
        assert result.exit_code == 0, result.output
        results = json.loads((tmp_path / "run" / "results.json").read_text())
        assert results["status"] in ("passed", "unchecked")
        assert (tmp_path / "run" / "REPORT.md").is_file()


def test_machinery_runs_a_smoke_profile(fake_spec, fake_experiment_module, tmp_path):
    result = run_smoke(fake_spec.id, tmp_path / "run", None)
    assert result.exit_code == 0, result.output
    assert fake_experiment_module.calls == [{"start": 0, "resume": False, "seed": 7, "device": "cpu",
                                             "data_dir": None, "run_dir": tmp_path / "run"}]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "passed"
    assert (tmp_path / "run" / "plots" / "test.png").is_file()
