"""A training run's directory: ``log.txt``, TSV tables, TensorBoard events and tqdm progress.

Layout (as the ℓ∞-dist code writes it, linfdist.md §1f)::

    <run>/log.txt                 every message of :meth:`RunDirectory.log`, also echoed to stdout
    <run>/train.log, test.log     TSV tables (:class:`TableLog`): a header, then one flushed row per epoch
    <run>/events.out.tfevents.*   TensorBoard scalars (:meth:`RunDirectory.scalars`)
    <run>/checkpoint.pt           written by :mod:`certcore.checkpoint`

A directory that already holds a run is never clobbered by accident: opening it needs ``resume=True``
(append, after :meth:`RunDirectory.rewind` to the checkpoint's epoch) or ``overwrite=True`` (the old run's
files are deleted; other files are left alone). Under DDP only the main process writes anything.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from certcore.distributed import is_main_process

__all__ = ["RUN_FILE_PATTERNS", "RunDirectory", "RunDirectoryError", "TableLog"]

RUN_FILE_PATTERNS = ("log.txt", "*.log", "checkpoint.pt", "events.out.tfevents.*", ".*.tmp")
"""Files that mark a directory as holding a run (``.*.tmp``: leftovers of an interrupted atomic write)."""

T = TypeVar("T")


class RunDirectoryError(FileExistsError):
    """The run directory cannot be used as asked (it holds a run, or is not a directory)."""


def _format_value(value: Any) -> str:
    if isinstance(value, bool | int | str):
        text = str(value)
    else:
        number = float(value)  # floats, numpy scalars, one-element tensors
        text = repr(number) if math.isfinite(number) else str(number)
    if "\t" in text or "\n" in text:
        raise ValueError(f"TSV value {text!r} must not contain tabs or newlines")
    return text


def _replace_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TableLog:
    """A TSV table with a header row; each :meth:`log` appends one row and flushes it to disk.

    Opening a file that already exists appends to it, provided its header is ``columns`` (a row cut
    short by a crash is dropped). :meth:`truncate_after` drops the rows whose first column (the epoch)
    is beyond a resumed checkpoint, so a resumed run does not log the same epoch twice.
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.enabled = enabled
        if not self.columns:
            raise ValueError(f"{self.path.name}: a table needs at least one column")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"{self.path.name}: column names must be unique, got {list(self.columns)}")
        for name in self.columns:
            if not isinstance(name, str) or not name or "\t" in name or "\n" in name:
                raise ValueError(f"{self.path.name}: invalid column name {name!r}")
        if enabled:
            self._open()

    def _open(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _replace_atomically(self.path, "\t".join(self.columns) + "\n")
            return
        text = self.path.read_text()
        header = tuple(text.split("\n", 1)[0].split("\t"))
        if header != self.columns:
            raise ValueError(
                f"{self.path} has columns {list(header)} but this run writes {list(self.columns)}; "
                "resume with the same configuration, or start a new run directory"
            )
        if not text.endswith("\n"):  # the last row was cut short by a crash
            self._rewrite(keep=lambda fields: True)

    def _complete_rows(self) -> list[list[str]]:
        lines = self.path.read_text().split("\n")
        complete = lines[1:-1]  # header first; the text after the last newline is not a full row
        return [line.split("\t") for line in complete if line.count("\t") == len(self.columns) - 1]

    def _rewrite(self, keep) -> None:
        rows = [fields for fields in self._complete_rows() if keep(fields)]
        lines = ["\t".join(self.columns), *("\t".join(fields) for fields in rows)]
        _replace_atomically(self.path, "\n".join(lines) + "\n")

    def truncate_after(self, epoch: float) -> None:
        """Drop every row whose first column is a number greater than ``epoch``."""
        if not self.enabled:
            return

        def keep(fields: list[str]) -> bool:
            try:
                return float(fields[0]) <= epoch
            except ValueError:
                return True

        self._rewrite(keep)

    def log(self, row: Mapping[str, Any] | Sequence[Any]) -> None:
        """Append one row: a mapping with exactly the table's columns, or values in column order."""
        if isinstance(row, Mapping):
            if set(row) != set(self.columns):
                missing = sorted(set(self.columns) - set(row))
                extra = sorted(set(row) - set(self.columns))
                raise ValueError(
                    f"{self.path.name}: row does not fit the columns (missing {missing}, extra {extra})"
                )
            values = [row[name] for name in self.columns]
        else:
            values = list(row)
            if len(values) != len(self.columns):
                raise ValueError(
                    f"{self.path.name}: row has {len(values)} values, expected {len(self.columns)}"
                )
        if not self.enabled:
            return
        line = "\t".join(_format_value(value) for value in values) + "\n"
        with open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> list[dict[str, str]]:
        """The rows written so far, as strings keyed by column."""
        return [dict(zip(self.columns, fields)) for fields in self._complete_rows()]


class RunDirectory:
    """The directory of one training run; a context manager that closes its files on exit.

    Raises :class:`RunDirectoryError` when ``path`` holds a previous run (see ``RUN_FILE_PATTERNS``)
    unless ``resume`` or ``overwrite``. ``main_process`` defaults to :func:`is_main_process`; on the
    other ranks nothing is created or written and :meth:`progress` shows no bar.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        resume: bool = False,
        overwrite: bool = False,
        main_process: bool | None = None,
        echo: bool = True,
    ) -> None:
        if resume and overwrite:
            raise ValueError(
                "resume=True continues the run in the directory, overwrite=True deletes it: pick one"
            )
        self.path = Path(path)
        self.resume = resume
        self.is_main = is_main_process() if main_process is None else main_process
        self.echo = echo
        self._tables: dict[str, TableLog] = {}
        self._writer = None
        self._rewound_to: int | None = None
        self._log_handle = None  # log.txt is opened on the first message: an unused directory stays empty
        self._closed = False
        if self.is_main:
            self._prepare(overwrite)

    def previous_run_files(self) -> list[Path]:
        """The files in the directory that belong to a run (empty for a new or unrelated directory)."""
        if not self.path.is_dir():
            return []
        found = {p for pattern in RUN_FILE_PATTERNS for p in self.path.glob(pattern) if p.is_file()}
        return sorted(found)

    def _prepare(self, overwrite: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"run directory {self.path} exists and is not a directory")
        previous = self.previous_run_files()
        if previous and not self.resume:
            if not overwrite:
                names = ", ".join(p.name for p in previous[:6]) + (", ..." if len(previous) > 6 else "")
                raise RunDirectoryError(
                    f"run directory {self.path} already holds a run ({names}); pass resume=True (--resume) "
                    "to continue it, overwrite=True to delete it and start over, or choose a new directory"
                )
            for file in previous:
                file.unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    def log(self, message: str) -> None:
        """Append ``message`` to ``log.txt`` and print it (main process only)."""
        if not self.is_main:
            return
        if self._closed:
            raise ValueError(f"run directory {self.path} is closed")
        if self._log_handle is None:
            self._log_handle = open(self.path / "log.txt", "a", buffering=1)
        self._log_handle.write(f"{message}\n")
        if self.echo:
            print(message, flush=True)

    def table(self, name: str, columns: Sequence[str]) -> TableLog:
        """The TSV table ``<run>/<name>`` (opened once; later calls must pass the same columns)."""
        if name in self._tables:
            table = self._tables[name]
            if table.columns != tuple(columns):
                raise ValueError(
                    f"table {name} is open with columns {list(table.columns)}, not {list(columns)}"
                )
            return table
        table = TableLog(self.path / name, columns, enabled=self.is_main)
        if self._rewound_to is not None:
            table.truncate_after(self._rewound_to)
        self._tables[name] = table
        return table

    def rewind(self, epoch: int) -> None:
        """Forget what was logged after ``epoch`` (the epoch of the checkpoint being resumed).

        TSV rows with a larger epoch are dropped, now and in tables opened later; TensorBoard events
        with a step beyond ``epoch`` are purged (``purge_step = epoch + 1``), so use the epoch as step.
        """
        self._rewound_to = epoch
        for table in self._tables.values():
            table.truncate_after(epoch)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        """Write ``values`` as TensorBoard scalars ``<prefix><name>`` at ``step`` (main process only)."""
        if not self.is_main:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

            purge_step = None if self._rewound_to is None else self._rewound_to + 1
            self._writer = SummaryWriter(log_dir=str(self.path), purge_step=purge_step)
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}{name}", float(value), step)
        self._writer.flush()

    def progress(self, iterable: Iterable[T], desc: str | None = None, **tqdm_kwargs) -> Iterable[T]:
        """``tqdm(iterable)``, shown only on the main process and when stderr is a terminal."""
        from tqdm.auto import tqdm

        show = self.is_main and sys.stderr.isatty()
        tqdm_kwargs.setdefault("leave", False)
        tqdm_kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, desc=desc, disable=not show, **tqdm_kwargs)

    def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
