"""``reproduce run`` / ``report`` / ``tables`` end to end, with the fake spec and experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reproduce import registry, report, runner
from reproduce.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_run_writes_results_report_and_plots(fake_spec, fake_experiment_module, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "copypaste: clean,pgd,certified" in result.output
    assert "copypaste: 90.0000,85.0000,80.0000" in result.output
    assert "OK: lipnorm-digits0-fake [smoke] passed" in result.output

    results = json.loads((out / "results.json").read_text())
    assert results["table_id"] == fake_spec.id and results["profile"] == "smoke"
    assert results["status"] == "passed"
    assert results["metrics"] == {"clean": 90.0, "pgd": 85.0, "certified": 80.0}
    assert results["expected"]["clean"] == {"value": 90.2, "tolerance": 1.0}
    assert results["paper"] == {"clean": 91.0, "pgd": 86.0, "certified": 80.0}
    assert results["device"] == "cpu" and results["seed"] == 7  # the recipe's seed
    assert results["command"].startswith(f"reproduce run {fake_spec.id} --profile smoke --out ")
    assert results["versions"]["torch"] and results["versions"]["certcore"]
    assert results["wall_time_s"] >= 0 and results["synthetic_data"] is True
    spec_json = json.loads((out / "spec.json").read_text())
    assert spec_json["run"] == {"table_id": fake_spec.id, "profile": "smoke", "seed": 7, "eval_only": None}
    assert spec_json["table"]["source"]["table"] == "Table 0"

    for png in ("plots/train.png", "plots/test.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "REPORT.md").read_text()
    assert text.startswith(f"# {fake_spec.id} — `smoke` profile")
    assert "Fake paper (Test'26), Table 0, row “fake row”" in text
    assert ("| metric | paper | measured | Δ vs paper | expected (`smoke`) | Δ vs expected "
            "| within tolerance |") in text
    assert "| clean | 91.00 | 90.00 | -1.00 | 90.20 ± 1.00 | -0.20 | ✅ yes |" in text
    assert "| pgd | 86.00 | 85.00 | -1.00 | — | — | — |" in text
    assert "![train](plots/train.png)" in text and "![test](plots/test.png)" in text
    assert "✅ **passed**" in text and "synthetic data" in text


def test_run_outside_tolerance_exits_1_and_names_the_metric(fake_spec, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", fake_spec.id, "--profile", "quick", "--out", out, "--device", "cpu")
    assert result.exit_code == 1
    assert "FAILED: lipnorm-digits0-fake (quick): 1 of 2 expected metrics outside tolerance" in result.output
    assert "clean: measured 85, expected 90 ± 1" in result.output
    assert "certified" not in result.output.split("FAILED:")[1]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed"
    assert [c["metric"] for c in results["checks"] if not c["ok"]] == ["clean"]
    text = (out / "REPORT.md").read_text()
    assert "❌ **FAILED**: 1 of 2 expected metrics outside tolerance (clean)" in text
    assert "| clean | 91.00 | 85.00 | -6.00 | 90.00 ± 1.00 | -5.00 | ❌ no" in text


def test_missing_or_nonfinite_metric_fails(fake_spec, fake_experiment_module, tmp_path):
    fake_experiment_module.run = lambda spec, profile, ctx: {"clean": float("nan")}
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--out", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 1
    assert "clean: measured nan" in result.output and "not finite" in result.output
    assert "certified: measured —" in result.output and "missing" in result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metrics"] == {"clean": "nan"}


def test_default_run_dir_is_under_runs(fake_spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith(f"{fake_spec.id}-smoke-")
    assert (run_dir / "results.json").exists()


def test_crash_then_resume_continues_in_the_same_dir(fake_spec, fake_experiment_module, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", fake_spec.id, "--profile", "full", "--out", out, "--device", "cpu")
    assert result.exit_code == 3
    assert "simulated crash" in result.output and "--resume" in result.output
    assert not (out / "results.json").exists()
    assert len(list(out.glob("failure.*.txt"))) == 1
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1
    spec_before = (out / "spec.json").read_text()

    # the run directory holds this run: without --resume it is refused, and nothing is touched
    result = invoke("run", fake_spec.id, "--profile", "full", "--out", out, "--device", "cpu")
    assert result.exit_code == 2 and "continue it with --resume" in result.output

    result = invoke("run", fake_spec.id, "--profile", "full", "--out", out, "--device", "cpu", "--resume")
    assert result.exit_code == 0, result.output
    assert fake_experiment_module.calls[-1]["start"] == 1 and fake_experiment_module.calls[-1]["resume"]
    assert (out / "spec.json").read_text() == spec_before
    epochs = [line.split("\t")[0] for line in (out / "train.log").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4"]
    assert json.loads((out / "results.json").read_text())["resumed"] is True
    assert len(list(out.glob("failure.*.txt"))) == 1  # kept

    # resuming a finished run keeps the earlier results.json
    result = invoke("run", fake_spec.id, "--profile", "full", "--out", out, "--device", "cpu", "--resume")
    assert result.exit_code == 0
    assert len(list(out.glob("results.*.json"))) == 1


def test_run_dir_holding_a_different_run_is_refused(fake_spec, tmp_path):
    out = tmp_path / "run"
    assert invoke("run", fake_spec.id, "--profile", "smoke", "--out", out, "--device", "cpu").exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra in ([], ["--resume"]):
        result = invoke("run", fake_spec.id, "--profile", "quick", "--out", out, "--device", "cpu", *extra)
        assert result.exit_code == 2
        assert "already holds a different run (profile: 'smoke' there, 'quick' asked)" in result.output
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--out", out, "--seed", "3", "--resume")
    assert result.exit_code == 2 and "seed: 7 there, 3 asked" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_non_empty_dir_without_a_run_is_refused(fake_spec, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for extra in ([], ["--resume"]):
        result = invoke("run", fake_spec.id, "--profile", "smoke", "--out", out, *extra)
        assert result.exit_code == 2 and "holds no reproduce run" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_input_is_a_clear_error_and_writes_nothing(fake_spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--data-dir", tmp_path / "nodata")
    assert result.exit_code == 2 and "--data-dir" in result.output and "does not exist" in result.output
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--eval-only", tmp_path / "none.pt")
    assert result.exit_code == 2 and "no such checkpoint file" in result.output
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--resume")
    assert result.exit_code == 2 and "--resume needs --out" in result.output
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--device", "tpu:x")
    assert result.exit_code == 2 and "invalid --device" in result.output
    result = invoke("run", fake_spec.id, "--profile", "medium")
    assert result.exit_code == 2 and "'medium' is not one of" in result.output
    assert not (tmp_path / "runs").exists()


def test_missing_experiment_module_is_a_clear_error(make_spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = make_spec(experiment="certkit_no_such_package.experiment:run")
    with registry.registered(spec):
        result = invoke("run", spec.id, "--profile", "smoke")
    assert result.exit_code == 2
    assert "cannot import its experiment module 'certkit_no_such_package.experiment'" in result.output
    assert "pip install -e packages/lipnorm" in result.output
    assert not (tmp_path / "runs").exists()


def test_experiment_must_return_metrics(fake_spec, fake_experiment_module, tmp_path):
    fake_experiment_module.run = lambda spec, profile, ctx: [90.0]
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--out", tmp_path / "r")
    assert result.exit_code == 3 and "must return a dict of metric name -> float" in result.output


def test_eval_only_certifies_a_checkpoint(fake_spec, fake_experiment_module, tmp_path):
    ckpt = tmp_path / "model.json"
    ckpt.write_text(json.dumps({"clean": 90.5, "certified": 80.1}))
    out = tmp_path / "eval"
    result = invoke("run", fake_spec.id, "--profile", "smoke", "--eval-only", ckpt, "--out", out,
                    "--seed", "11", "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert fake_experiment_module.calls[-1] == {"eval_only": str(ckpt.resolve()), "seed": 11}
    results = json.loads((out / "results.json").read_text())
    assert results["eval_only"] == str(ckpt.resolve()) and results["data_dir"] == str(tmp_path.resolve())
    assert f"--eval-only {ckpt.resolve()}" in results["command"]
    text = (out / "REPORT.md").read_text()
    assert "Evaluated checkpoint" in text and "No TSV logs" in text


def test_report_command_regenerates_the_report(fake_spec, tmp_path):
    out = tmp_path / "run"
    invoke("run", fake_spec.id, "--profile", "smoke", "--out", out, "--device", "cpu")
    (out / "REPORT.md").unlink()
    (out / "plots" / "train.png").unlink()
    with registry.registered():  # works from the run directory alone, without the spec
        registry.unregister(fake_spec.id)
        result = invoke("report", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out / "REPORT.md")
    assert (out / "plots" / "train.png").exists()
    assert "✅ **passed**" in (out / "REPORT.md").read_text()


def test_report_of_an_unfinished_or_foreign_dir_is_an_error(tmp_path):
    result = invoke("report", tmp_path)
    assert result.exit_code == 2 and "not a reproduce run directory" in result.output
    (tmp_path / "spec.json").write_text(json.dumps({"run": {}, "table": {}}))
    result = invoke("report", tmp_path)
    assert result.exit_code == 2 and "the run has not finished" in result.output


def test_read_tsv_and_plot_tolerate_odd_logs(tmp_path):
    (tmp_path / "a.log").write_text("epoch\tacc\tnote\n1\t50\tx\n2\t60\ty\nbroken\n")
    assert report.read_tsv(tmp_path / "a.log") == {"epoch": [1.0, 2.0], "acc": [50.0, 60.0]}
    (tmp_path / "b.log").write_text("just text\n")
    (tmp_path / "c.tsv").write_text("loss\n0.5\n0.25\n")
    plots = report.plot_logs(tmp_path)
    assert [p.name for p in plots] == ["a.png", "c.png"]


def test_tables_markdown_and_readme_update(fake_spec, tmp_path):
    result = invoke("tables", "lipnorm")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("| Table id"))
    assert header == ("| Table id | Paper row | Dataset | ε (test / train) | clean | pgd | certified | "
                      "Full run | Quick profile (CPU) |")
    row = next(line for line in lines if line.startswith(f"| `{fake_spec.id}`"))
    assert "| 91 (±1) | 86 | 80 (±1) | 1x fake GPU, 4 s |" in row
    assert "8/255 / 8.8/255 (ℓ∞)" in row
    assert "clean 90 ± 1, certified 75 ± 1; 2 s" in row
    assert invoke("tables", "fastibp").output.strip() == "_No reproduce tables for `fastibp` yet._"

    readme = tmp_path / "README.md"
    readme.write_text(f"# lipnorm\n\nbefore\n{report.README_START}\nold\n{report.README_END}\nafter\n")
    result = invoke("tables", "lipnorm", "--update", readme)
    assert result.exit_code == 0 and "updated" in result.output
    text = readme.read_text()
    assert "old" not in text and fake_spec.id in text and text.endswith(f"{report.README_END}\nafter\n")
    assert "already up to date" in invoke("tables", "lipnorm", "--update", readme).output
    (tmp_path / "NOMARK.md").write_text("# x\n")
    result = invoke("tables", "lipnorm", "--update", tmp_path / "NOMARK.md")
    assert result.exit_code == 2 and "has no table markers" in result.output


def test_run_table_api_returns_outcome(fake_spec, tmp_path):
    lines: list[str] = []
    outcome = runner.run_table(fake_spec.id, "quick", out=tmp_path / "r", device="cpu", echo=lines.append)
    assert not outcome.passed and outcome.exit_code == 1
    assert outcome.run_dir == Path(tmp_path / "r")
    assert any(line.startswith("copypaste:") for line in lines)


@pytest.mark.parametrize("seconds,text",
                         [(3.21, "3.2 s"), (125, "2 min 05 s"), (3 * 3600 + 120, "3 h 02 min")])
def test_format_duration(seconds, text):
    assert report.format_duration(seconds) == text
