"""``reproduce``: one command per published table.

    reproduce list [--package linfdist]
    reproduce show linfdist-cifar8
    reproduce run linfdist-cifar8 --profile smoke|quick|full [--data-dir D] [--out RUN_DIR] [--resume]
                                  [--device auto|cpu|cuda[:N]] [--eval-only CKPT] [--seed N]
    reproduce report RUN_DIR
    reproduce tables linfdist [--update packages/linfdist/README.md]

Exit status of ``run``: 0 when every expected number is within its tolerance, 1 when one is not,
2 for bad input (unknown id, missing data directory, a run directory holding another run), 3 when
the experiment itself failed (the run directory is kept; continue it with ``--resume``).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from reproduce import registry
from reproduce.spec import PROFILE_NAMES, ReproduceError, format_eps

EXIT_TOLERANCE, EXIT_INPUT, EXIT_EXPERIMENT = 1, 2, 3


class InputError(click.ClickException):
    exit_code = EXIT_INPUT


class ExperimentFailed(click.ClickException):
    exit_code = EXIT_EXPERIMENT


def _warn_unavailable() -> None:
    for module, info in sorted(registry.unavailable().items()):
        reason = info.reason.strip().splitlines()[-1]
        click.echo(f"note: tables of {module} are unavailable ({info.kind}): {reason}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Reproduce the certkit papers' tables: one `reproduce run <id>` per table row."""


@main.command("list")
@click.option("--package", "-p", help="Only this package's tables (linfdist, lirpa, fastibp, lipnorm, gloro)")
def list_tables(package: str | None) -> None:
    """Table ids with their source, dataset, ε and profiles."""
    try:
        ids = registry.ids(package)
    except ReproduceError as exc:
        raise InputError(str(exc)) from None
    _warn_unavailable()
    if not ids:
        click.echo("no tables available" + (f" for package {package}" if package else ""))
        return
    rows = [("ID", "SOURCE", "DATASET", "ε", "PROFILES")]
    for table_id in ids:
        spec = registry.get(table_id)
        source = f"{spec.source.venue}, {spec.source.table}, row {spec.source.row!r}"
        rows.append((spec.id, source, spec.dataset, spec.eps_label(), ",".join(spec.profiles)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


@main.command()
@click.argument("table_id")
def show(table_id: str) -> None:
    """Everything a spec says: source, ε, model, and each profile's recipe and expected numbers."""
    try:
        spec = registry.get(table_id)
    except ReproduceError as exc:
        raise InputError(str(exc)) from None
    click.echo(f"{spec.id}: {spec.description}" if spec.description else spec.id)
    click.echo(f"  source:     {spec.source}")
    click.echo(f"  dataset:    {spec.dataset}, ε test {format_eps(spec.eps_test)}, "
               f"train {format_eps(spec.eps_train)} ({spec.norm})")
    click.echo(f"  model:      {spec.model!r}")
    click.echo(f"  paper:      {', '.join(f'{k} {v:g}' for k, v in spec.paper.items()) or '—'}")
    click.echo(f"  experiment: {spec.experiment}")
    for profile in spec.profiles.values():
        expected = ", ".join(f"{k} {e.value:g} ± {e.tolerance:g}" for k, e in profile.expected.items())
        click.echo(f"  [{profile.name}] {profile.hardware or '?'}, {profile.time_hint or '?'}"
                   f"{', synthetic data' if profile.synthetic_data else ''}")
        click.echo(f"      expects: {expected or '—'}")
        click.echo(f"      recipe:  {profile.recipe!r}")
        if profile.notes:
            click.echo(f"      notes:   {profile.notes}")


@main.command()
@click.argument("table_id")
@click.option("--profile", type=click.Choice(PROFILE_NAMES), default="full", show_default=True,
              help="smoke: seconds, CI; quick: real data, a CPU, <~30 min; full: the paper's recipe.")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Dataset root in torchvision's layout (default: $CERTCORE_DATA, else ~/.cache/certcore).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Run directory (default: runs/<id>-<profile>-<timestamp>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--eval-only", "eval_only", type=click.Path(path_type=Path, dir_okay=False),
              help="Certify this trained checkpoint instead of training, then write the report.")
@click.option("--seed", type=int, default=None, help="Random seed (default: the recipe's seed, else 0).")
def run(table_id: str, profile: str, data_dir: Path | None, out: Path | None, resume: bool, device: str,
        eval_only: Path | None, seed: int | None) -> None:
    """Run one profile of a table; exit 1 when a number falls outside its tolerance."""
    from reproduce import runner

    try:
        outcome = runner.run_table(table_id, profile, data_dir=data_dir, out=out, resume=resume,
                                   device=device, eval_only=eval_only, seed=seed, echo=click.echo)
    except runner.ExperimentError as exc:
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        raise ExperimentFailed(str(exc)) from None
    except ReproduceError as exc:
        raise InputError(str(exc)) from None
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
def report(run_dir: Path) -> None:
    """Regenerate REPORT.md and the curve plots of a finished run directory."""
    from reproduce import report as report_module

    try:
        path = report_module.write_report(run_dir)
    except ReproduceError as exc:
        raise InputError(str(exc)) from None
    click.echo(str(path))


@main.command()
@click.argument("package")
@click.option("--update", "readme", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Write the table between the README's <!-- reproduce:tables:start/end --> markers.")
def tables(package: str, readme: Path | None) -> None:
    """A package README's results table (Markdown), generated from the specs."""
    from reproduce import report as report_module

    try:
        if readme is None:
            click.echo(report_module.tables_markdown(package), nl=False)
        else:
            changed = report_module.update_readme(readme, package)
            click.echo(f"{readme}: {'updated' if changed else 'already up to date'}")
    except ReproduceError as exc:
        raise InputError(str(exc)) from None
