"""`nox -s demo` runs `python -m reproduce.demo`: a short run of both models, then a resumed rerun."""

from __future__ import annotations

import re

from click.testing import CliRunner

from reproduce.demo import main

ROW = r"^(IBP CNN|same CNN|ℓ∞-dist net)\b.*?" + r"\s+([\d.]+)" * 4 + r"\s"


def _rows(output: str) -> dict[str, list[float]]:
    rows = {}
    for line in output.splitlines():
        m = re.match(ROW, line)
        if m:
            rows[m.group(1)] = [float(v) for v in m.groups()[1:]]
    return rows


def test_demo_trains_certifies_and_resumes(tmp_path):
    args = ["--epochs", "4", "--test-images", "120", "--out", str(tmp_path / "demo")]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    rows = _rows(first.output)
    assert set(rows) == {"IBP CNN", "same CNN", "ℓ∞-dist net"}
    for clean, robust, cert, seconds in rows.values():
        assert 0 <= cert <= robust <= clean <= 100  # certified ⊆ PGD-robust ⊆ correct
        assert seconds > 0
    assert rows["IBP CNN"][0] > 50  # four epochs on digits already learn something
    assert rows["same CNN"][:2] == rows["IBP CNN"][:2]  # one model: same clean and PGD accuracy
    assert (tmp_path / "demo" / "results.txt").is_file()
    assert (tmp_path / "demo" / "ibp-cnn" / "checkpoint.pt").is_file()

    # Run again: both runs resume from their finished checkpoints and report the same numbers.
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "nothing to do" in (tmp_path / "demo" / "ibp-cnn" / "log.txt").read_text()
    assert _rows(again.output)["IBP CNN"][:3] == rows["IBP CNN"][:3]
    assert _rows(again.output)["ℓ∞-dist net"][:3] == rows["ℓ∞-dist net"][:3]


def test_demo_rejects_bad_eps():
    result = CliRunner().invoke(main, ["--eps", "-0.1"])
    assert result.exit_code == 2
    assert "--eps" in result.output
