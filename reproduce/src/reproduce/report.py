"""``REPORT.md`` for a run directory, training-curve PNGs, and the README results tables.

``write_report(run_dir)`` needs only the run directory (``spec.json``, ``results.json`` and the TSV
logs), so ``reproduce report <run-dir>`` regenerates a report without importing the spec.
``tables_markdown(package)`` renders a package README's results table from the specs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reproduce.spec import ReproduceError, format_eps

PLOTS_DIR = "plots"
LOG_SUFFIXES = (".log", ".tsv")
README_START = "<!-- reproduce:tables:start -->"
README_END = "<!-- reproduce:tables:end -->"


# ---------------------------------------------------------------------------- logs and plots


def read_tsv(path: Path) -> dict[str, list[float]]:
    """Numeric columns of a TSV log with a header row; non-numeric columns and malformed rows are dropped."""
    text = Path(path).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    rows = [row for row in rows if len(row) == len(header)]
    columns: dict[str, list[float]] = {}
    for i, name in enumerate(header):
        values: list[float] = []
        for row in rows:
            try:
                values.append(float(row[i]))
            except ValueError:
                break
        else:
            if values:
                columns[name] = values
    return columns


def log_files(run_dir: Path) -> list[Path]:
    """The run's TSV logs, ``train*`` first, then ``test*``, then the rest by name."""
    logs = [p for p in Path(run_dir).iterdir() if p.is_file() and p.suffix in LOG_SUFFIXES]
    return sorted(logs, key=lambda p: (not p.name.startswith("train"), not p.name.startswith("test"), p.name))


def plot_log(path: Path, out: Path) -> Path | None:
    """A PNG with a panel per metric column against ``epoch`` (or the row number); None if nothing to plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = read_tsv(path)
    if "epoch" in columns:
        x, xlabel = columns.pop("epoch"), "epoch"
    else:
        x, xlabel = [float(i) for i in range(len(next(iter(columns.values()), [])))], "row"
    if not columns or not x:
        return None
    names = list(columns)[:12]
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.plot(x, columns[name], marker="." if len(x) < 50 else None, linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    fig.suptitle(path.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, out)
    return out


def plot_logs(run_dir: Path) -> list[Path]:
    """``plots/<log name>.png`` for every TSV log in the run directory."""
    run_dir = Path(run_dir)
    plots = []
    for path in log_files(run_dir):
        png = plot_log(path, run_dir / PLOTS_DIR / f"{path.stem}.png")
        if png is not None:
            plots.append(png)
    return plots


# ---------------------------------------------------------------------------- REPORT.md


def _num(value: Any, signed: bool = False) -> str:
    if value is None:
        return "—"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ReproduceError(f"{path.parent} holds no {path.name}: {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReproduceError(f"{path} is not valid JSON ({exc})") from None


def _ordered_metrics(*groups: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        for name in group:
            seen.setdefault(name, None)
    return list(seen)


def _measured(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def render_report(spec_json: Mapping[str, Any], results: Mapping[str, Any], plots: list[str]) -> str:
    """The text of ``REPORT.md`` (``plots`` are paths relative to the run directory)."""
    table = spec_json.get("table", {})
    source = table.get("source", {})
    profile = results["profile"]
    prof = table.get("profiles", {}).get(profile, {})
    metrics = results.get("metrics", {})
    expected = results.get("expected", {})
    paper = results.get("paper", table.get("paper", {}))
    checks = {c["metric"]: c for c in results.get("checks", [])}
    bad = [c for c in checks.values() if not c["ok"]]
    n_expected = sum(c.get("expected") is not None for c in checks.values())
    versions = results.get("versions", {})
    git = results.get("git", {}) or {}

    if bad:
        verdict = f"❌ **FAILED**: {len(bad)} of {n_expected} expected metrics outside tolerance " \
                  f"({', '.join(c['metric'] for c in bad)})"
    elif n_expected:
        verdict = f"✅ **passed**: all {n_expected} expected metrics within tolerance"
    else:
        verdict = "⚪ **unchecked**: this profile has no expected numbers"

    src = f"{source.get('paper', '?')} ({source.get('venue', '?')}), {source.get('table', '?')}, " \
          f"row “{source.get('row', '?')}”"
    if source.get("url"):
        src += f" — <{source['url']}>"
    norm = "ℓ∞" if table.get("norm", "linf") == "linf" else "ℓ2"
    eps = (f"{format_eps(table.get('eps_test', 0.0))} test, "
           f"{format_eps(table.get('eps_train', 0.0))} train ({norm})")
    profile_line = f"`{profile}`" + (" — synthetic data" if results.get("synthetic_data") else "")
    if prof.get("notes"):
        profile_line += f" — {prof['notes']}"
    commit = git.get("commit")
    code = "unknown" if not commit else f"`{commit[:12]}`"
    if commit and git.get("dirty"):
        code += " (uncommitted changes)"
    version_text = ", ".join(f"{k} {v}" for k, v in versions.items()
                             if k not in ("platform",) and v is not None)

    lines = [
        f"# {results['table_id']} — `{profile}` profile",
        "",
        table.get("description", "") or "",
        "",
        verdict,
        "",
        "| | |",
        "|---|---|",
        f"| Source | {src} |",
        f"| Dataset | {table.get('dataset', '?')}, ε = {eps} |",
        f"| Profile | {profile_line} |",
        f"| Command | `{results.get('command', '')}` |",
        f"| This run | {results.get('device_name', results.get('device', '?'))}, wall time "
        f"{format_duration(float(results.get('wall_time_s', 0.0)))}"
        f"{' (resumed; this invocation only)' if results.get('resumed') else ''}, "
        f"finished {results.get('finished_at', '?')} |",
        f"| Expected for this profile | {results.get('profile_hardware') or '?'}, "
        f"{results.get('profile_time_hint') or '?'} |",
        f"| Full run (paper recipe) | {results.get('full_hardware') or '?'}, "
        f"{results.get('full_time_hint') or '?'} |",
        f"| Code | {code}; {version_text} |",
    ]
    if results.get("eval_only"):
        lines.append(f"| Evaluated checkpoint | `{results['eval_only']}` |")
    lines += [
        "",
        "## Results (%)",
        "",
        f"| metric | paper | measured | Δ vs paper | expected (`{profile}`) | Δ vs expected "
        "| within tolerance |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for name in _ordered_metrics(expected, paper, metrics):
        measured = _measured(metrics.get(name))
        exp = expected.get(name)
        p = paper.get(name)
        d_paper = None if measured is None or p is None else measured - float(p)
        d_exp = None if measured is None or exp is None else measured - float(exp["value"])
        exp_text = "—" if exp is None else f"{_num(exp['value'])} ± {_num(exp['tolerance'])}"
        check = checks.get(name)
        if exp is None:
            within = "—"
        elif check is not None and check["ok"]:
            within = "✅ yes"
        else:
            within = "❌ no" + (f" ({check['reason']})" if check and check.get("reason") else "")
        measured_text = "—" if name not in metrics else _num(metrics[name])
        lines.append(f"| {name} | {_num(p)} | {measured_text} | {_num(d_paper, True)} | {exp_text} | "
                     f"{_num(d_exp, True)} | {within} |")
    if results.get("synthetic_data"):
        lines += ["", "_This profile runs on synthetic data: its numbers check that the pipeline works, "
                      "not the paper's claim._"]
    lines += ["", "## Training curves", ""]
    if plots:
        for plot in plots:
            lines += [f"![{Path(plot).stem}]({plot})", ""]
    else:
        lines += ["_No TSV logs with numeric columns in this run directory._", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(run_dir: Path) -> Path:
    """Plot the TSV logs and write ``REPORT.md``; returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReproduceError(f"{run_dir} is not a directory")
    spec_json = _read_json(run_dir / "spec.json", "it is not a reproduce run directory")
    results = _read_json(run_dir / "results.json",
                         "the run has not finished; continue it with `reproduce run ... --resume --out "
                         f"{run_dir}` (the command is in spec.json)")
    plots = [p.relative_to(run_dir).as_posix() for p in plot_logs(run_dir)]
    path = run_dir / "REPORT.md"
    tmp = path.with_name(".REPORT.md.tmp")
    tmp.write_text(render_report(spec_json, results, plots), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------- README tables


def _expect_text(expected: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {e.value:g} ± {e.tolerance:g}" for name, e in expected.items()) or "—"


def tables_markdown(package: str) -> str:
    """The results table of ``package``'s README, generated from its specs."""
    from reproduce import registry

    name = registry.normalize_package(package)
    specs = [registry.get(i) for i in registry.ids(name)]
    if not specs:
        return f"_No reproduce tables for `{name}` yet._\n"
    metrics = _ordered_metrics(*(s.paper for s in specs))
    header = ["Table id", "Paper row", "Dataset", "ε (test / train)", *metrics, "Full run",
              "Quick profile (CPU)"]
    lines = [
        "Published numbers in %; ± is the tolerance the `full` profile is checked against. "
        "Run a row with `reproduce run <id> --profile smoke|quick|full` (or `nox -s reproduce-<id> -- ...`).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * len(metrics) + ["---"] * 2) + "|",
    ]
    for spec in specs:
        full, quick = spec.profiles["full"], spec.profiles["quick"]
        cells = [f"`{spec.id}`", spec.source.short(), spec.dataset,
                 f"{format_eps(spec.eps_test)} / {format_eps(spec.eps_train)} "
                 f"({'ℓ∞' if spec.norm == 'linf' else 'ℓ2'})"]
        for metric in metrics:
            if metric not in spec.paper:
                cells.append("—")
            elif metric in full.expected:
                cells.append(f"{spec.paper[metric]:g} (±{full.expected[metric].tolerance:g})")
            else:
                cells.append(f"{spec.paper[metric]:g}")
        cells.append(", ".join(x for x in (full.hardware, full.time_hint) if x) or "—")
        cells.append(f"{_expect_text(quick.expected)}; {quick.time_hint or '?'}")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, package: str) -> bool:
    """Replace the text between the README's table markers with ``tables_markdown``; True if it changed."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ReproduceError(f"{readme} has no table markers; add the lines {README_START} and {README_END} "
                             f"where the results table belongs")
    new = text[: start + len(README_START)] + "\n" + tables_markdown(package) + text[end:]
    if new == text:
        return False
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, readme)
    return True
