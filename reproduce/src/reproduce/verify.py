"""Check measured metrics against a profile's expected numbers (detectron2's ``verify_results``).

Every expected metric must be present, finite and within its absolute tolerance (percentage
points). Metrics without an expectation are reported but never fail a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from reproduce.spec import Expected


@dataclass(frozen=True)
class Check:
    """The verdict on one metric."""

    metric: str
    expected: float | None
    tolerance: float | None
    measured: float | None
    ok: bool
    reason: str = ""

    @property
    def delta(self) -> float | None:
        if self.expected is None or self.measured is None or not math.isfinite(self.measured):
            return None
        return self.measured - self.expected

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["delta"] = self.delta
        if out["measured"] is not None and not math.isfinite(out["measured"]):
            out["measured"] = str(out["measured"])
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        measured = data.get("measured")
        return cls(data["metric"], data.get("expected"), data.get("tolerance"),
                   None if measured is None else float(measured), bool(data["ok"]), data.get("reason", ""))


def check_metrics(expected: Mapping[str, Expected], metrics: Mapping[str, float]) -> list[Check]:
    """One ``Check`` per expected metric (in the spec's order), then one per unexpected metric."""
    checks: list[Check] = []
    for metric, exp in expected.items():
        if metric not in metrics:
            checks.append(Check(metric, exp.value, exp.tolerance, None, False,
                                "missing: the experiment did not report it"))
            continue
        measured = float(metrics[metric])
        if not math.isfinite(measured):
            checks.append(Check(metric, exp.value, exp.tolerance, measured, False,
                                f"not finite ({measured})"))
        elif exp.admits(measured):
            checks.append(Check(metric, exp.value, exp.tolerance, measured, True))
        else:
            checks.append(Check(metric, exp.value, exp.tolerance, measured, False,
                                f"|{measured:.4g} - {exp.value:.4g}| = {abs(measured - exp.value):.4g} "
                                f"> tolerance {exp.tolerance:.4g}"))
    for metric, value in metrics.items():
        if metric not in expected:
            checks.append(Check(metric, None, None, float(value), True, "no expectation for this profile"))
    return checks


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def status(checks: list[Check]) -> str:
    """``"passed"``, ``"failed"``, or ``"unchecked"`` when the profile expects nothing."""
    if failures(checks):
        return "failed"
    return "passed" if any(c.expected is not None for c in checks) else "unchecked"


def failure_message(table_id: str, profile: str, checks: list[Check]) -> str:
    """A multi-line message naming each metric outside its tolerance."""
    bad = failures(checks)
    lines = [f"{table_id} ({profile}): {len(bad)} of {sum(c.expected is not None for c in checks)} "
             f"expected metrics outside tolerance:"]
    for c in bad:
        measured = "—" if c.measured is None else f"{c.measured:.4g}"
        lines.append(f"  {c.metric}: measured {measured}, expected {c.expected:.4g} ± {c.tolerance:.4g} "
                     f"({c.reason})")
    return "\n".join(lines)


def copypaste_lines(table_id: str, profile: str, metrics: Mapping[str, float]) -> list[str]:
    """detectron2's ``copypaste:`` lines: a header of metric names, then the values, comma-separated."""
    names = list(metrics)
    return [
        f"copypaste: Table {table_id} ({profile})",
        "copypaste: " + ",".join(names),
        "copypaste: " + ",".join(f"{float(metrics[n]):.4f}" for n in names),
    ]
