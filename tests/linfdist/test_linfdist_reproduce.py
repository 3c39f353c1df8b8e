"""The linfdist table specs, one smoke run through ``reproduce`` end to end, and ``--eval-only``."""

from __future__ import annotations

import json

import pytest

reproduce = pytest.importorskip("reproduce")

from linfdist.recipes import PRESETS, TrainRecipe  # noqa: E402
from reproduce import registry, runner  # noqa: E402

IDS = [
    "linfdist-mnist01",
    "linfdist-mnist03",
    "linfdist-cifar2",
    "linfdist-cifar8",
    "linfdist-cifar16",
    "linfdist-cifar8-v1",
    "linfdist-cifar8-v1hybrid",
]
PAPER = {  # v2 README: clean / PGD-100 / certified
    "linfdist-mnist01": (98.93, 98.03, 97.95),
    "linfdist-mnist03": (98.56, 94.73, 93.20),
    "linfdist-cifar2": (60.61, 54.28, 54.12),
    "linfdist-cifar8": (54.30, 41.84, 40.06),
    "linfdist-cifar16": (48.50, 32.73, 29.04),
}


def test_the_seven_rows_are_registered() -> None:
    assert registry.ids("linfdist") == sorted(IDS)
    for table_id, (clean, pgd, cert) in PAPER.items():
        spec = registry.get(table_id)
        assert spec.paper == {"clean_acc": clean, "pgd_acc": pgd, "certified_acc": cert}
        assert {k: e.value for k, e in spec.profiles["full"].expected.items()} == spec.paper
        preset = table_id.removeprefix("linfdist-")
        assert spec.profiles["full"].recipe == PRESETS[preset]  # the full profile is the script's recipe
        assert spec.eps_test == PRESETS[preset].eps_test and spec.eps_train == PRESETS[preset].eps_train
    for table_id in IDS:
        spec = registry.get(table_id)
        assert spec.experiment == "linfdist.experiment:run"
        assert all(isinstance(p.recipe, TrainRecipe) for p in spec.profiles.values())
        assert spec.profiles["smoke"].synthetic_data and not spec.profiles["quick"].synthetic_data
    assert registry.get("linfdist-cifar8-v1").paper == {"certified_acc": 33.30}
    assert registry.get("linfdist-cifar8-v1hybrid").paper == {"certified_acc": 35.42}


def test_smoke_run_then_eval_only(tmp_path) -> None:
    spec = registry.get("linfdist-mnist01")
    outcome = runner.run_table(spec, "smoke", out=tmp_path / "run", device="cpu", echo=lambda s: None)
    assert outcome.passed, outcome.checks
    run = tmp_path / "run"
    for name in (
        "REPORT.md",
        "results.json",
        "train.log",
        "test.log",
        "test_inf.log",
        "log.txt",
        "checkpoint.pt",
    ):
        assert (run / name).is_file(), name
    report = (run / "REPORT.md").read_text()
    assert "| certified_acc | 97.95 |" in report  # paper vs measured, side by side
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    again = runner.run_table(
        spec,
        "smoke",
        out=tmp_path / "eval",
        device="cpu",
        eval_only=run / "checkpoint.pt",
        echo=lambda s: None,
    )
    assert again.results["metrics"]["clean_acc"] == metrics["clean_acc"]
    assert again.results["metrics"]["certified_acc"] == metrics["certified_acc"]
    assert (tmp_path / "eval" / "REPORT.md").is_file()
