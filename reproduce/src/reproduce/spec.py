"""Typed table specs: one ``TableSpec`` per published table row, with three profiles.

A spec says where a number comes from (``Source``), what was measured (``paper``), how to measure it
again (``model``, the profiles' ``recipe``), and which numbers each profile must reach (``Expected``,
an absolute tolerance in percentage points). The ``experiment`` entry point (``"module:function"``)
is imported at run time and called as ``run(spec, profile, ctx) -> dict[str, float]``.

Profiles (detectron2's tiers, big_vision's ``runlocal``):

* ``smoke``: seconds, synthetic data allowed, runs in CI;
* ``quick``: real data on a CPU in under ~30 minutes, with its own expected numbers;
* ``full``: the paper's recipe exactly, with the paper's hardware and time.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reproduce.table_ids import ID_PATTERN

ProfileName = Literal["smoke", "quick", "full"]
PROFILE_NAMES: tuple[str, ...] = ("smoke", "quick", "full")

# The id's first part, per package (distribution ``gloro-torch``, import ``gloro_torch``, ids ``gloro-...``).
ID_PREFIXES: dict[str, str] = {
    "linfdist": "linfdist",
    "lirpa": "lirpa",
    "fastibp": "fastibp",
    "lipnorm": "lipnorm",
    "gloro_torch": "gloro",
}
NORMS = ("linf", "l2")

_METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ReproduceError(Exception):
    """A problem with the user's input or a spec, stated so that the user can fix it."""


def _is_dataclass_instance(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _check_finite(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReproduceError(f"{what} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Source:
    """Where a number was published: paper, venue, table and row (as the paper names them)."""

    paper: str
    venue: str
    table: str
    row: str
    url: str = ""

    def __post_init__(self) -> None:
        for name in ("paper", "venue", "table", "row"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ReproduceError(f"Source.{name} must be a non-empty string, got {getattr(self, name)!r}")

    def short(self) -> str:
        """``"ℓ∞-dist Net v2 (ICLR'22), Table 2, row 'MLP'"``."""
        return f"{self.paper} ({self.venue}), {self.table}, row {self.row!r}"

    def __str__(self) -> str:
        return self.short() + (f" <{self.url}>" if self.url else "")


@dataclass(frozen=True)
class Expected:
    """An expected metric value, in percent, and its absolute tolerance in percentage points."""

    value: float
    tolerance: float

    def __post_init__(self) -> None:
        _check_finite("Expected.value", self.value)
        tolerance = _check_finite("Expected.tolerance", self.tolerance)
        if tolerance < 0:
            raise ReproduceError(f"Expected.tolerance must be >= 0 (percentage points), got {tolerance}")

    def admits(self, measured: float) -> bool:
        """Whether ``measured`` is finite and within ``tolerance`` of ``value``."""
        return math.isfinite(measured) and abs(measured - self.value) <= self.tolerance + 1e-9


@dataclass(frozen=True)
class Profile:
    """One way to run a table: its recipe (the package's typed recipe dataclass) and expected numbers."""

    name: ProfileName
    recipe: Any
    expected: Mapping[str, Expected] = field(default_factory=dict)
    synthetic_data: bool = False
    hardware: str = ""
    time_hint: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.name not in PROFILE_NAMES:
            raise ReproduceError(f"Profile.name must be one of {', '.join(PROFILE_NAMES)}, got {self.name!r}")
        if not _is_dataclass_instance(self.recipe):
            raise ReproduceError(
                f"profile {self.name!r}: recipe must be an instance of the package's recipe dataclass, "
                f"got {type(self.recipe).__name__}"
            )
        expected: dict[str, Expected] = {}
        for metric, value in dict(self.expected).items():
            if not isinstance(metric, str) or not _METRIC_NAME.match(metric):
                raise ReproduceError(
                    f"profile {self.name!r}: metric name {metric!r} must match {_METRIC_NAME.pattern}"
                )
            if isinstance(value, tuple) and len(value) == 2:  # (value, tolerance), detectron2 style
                value = Expected(*value)
            if not isinstance(value, Expected):
                raise ReproduceError(
                    f"profile {self.name!r}: expected[{metric!r}] must be an Expected(value, tolerance), "
                    f"got {value!r}"
                )
            expected[metric] = value
        object.__setattr__(self, "expected", expected)


@dataclass(frozen=True)
class TableSpec:
    """One published table row, reproducible with ``reproduce run <id> --profile smoke|quick|full``."""

    id: str
    package: str
    source: Source
    dataset: str
    eps_test: float
    eps_train: float
    model: Any
    profiles: Mapping[str, Profile]
    paper: Mapping[str, float]
    experiment: str
    description: str = ""
    norm: Literal["linf", "l2"] = "linf"

    def __post_init__(self) -> None:
        where = f"TableSpec {self.id!r}"
        if not isinstance(self.id, str) or not ID_PATTERN.match(self.id):
            raise ReproduceError(
                f"{where}: the id must follow {{package}}-{{dataset}}{{eps}}[-{{variant}}] "
                f"(e.g. linfdist-cifar8, gloro-mnist158), i.e. match {ID_PATTERN.pattern}"
            )
        if self.package not in ID_PREFIXES:
            raise ReproduceError(f"{where}: package must be one of {', '.join(ID_PREFIXES)}, "
                                 f"got {self.package!r}")
        if not self.id.startswith(ID_PREFIXES[self.package] + "-"):
            raise ReproduceError(f"{where}: ids of package {self.package} start with "
                                 f"{ID_PREFIXES[self.package]!r}-")
        if not isinstance(self.source, Source):
            raise ReproduceError(f"{where}: source must be a Source, got {type(self.source).__name__}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ReproduceError(f"{where}: dataset must be a non-empty string")
        for name in ("eps_test", "eps_train"):
            if _check_finite(f"{where}: {name}", getattr(self, name)) < 0:
                raise ReproduceError(f"{where}: {name} must be >= 0, got {getattr(self, name)}")
        if self.norm not in NORMS:
            raise ReproduceError(f"{where}: norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.model is not None and not _is_dataclass_instance(self.model):
            raise ReproduceError(f"{where}: model must be the package's model config dataclass (or None), "
                                 f"got {type(self.model).__name__}")
        if not isinstance(self.experiment, str) or not _ENTRY_POINT.match(self.experiment):
            raise ReproduceError(f"{where}: experiment must be 'module:function', got {self.experiment!r}")
        profiles = dict(self.profiles)
        missing = [name for name in PROFILE_NAMES if name not in profiles]
        if missing:
            raise ReproduceError(f"{where}: profiles {', '.join(missing)} are missing; "
                                 f"every table has {', '.join(PROFILE_NAMES)}")
        for key, profile in profiles.items():
            if not isinstance(profile, Profile) or profile.name != key:
                raise ReproduceError(f"{where}: profiles[{key!r}] must be a Profile named {key!r}")
        paper: dict[str, float] = {}
        for metric, value in dict(self.paper).items():
            if not isinstance(metric, str) or not _METRIC_NAME.match(metric):
                raise ReproduceError(f"{where}: paper metric name {metric!r} must match "
                                     f"{_METRIC_NAME.pattern}")
            paper[metric] = _check_finite(f"{where}: paper[{metric!r}]", value)
        object.__setattr__(self, "profiles", {name: profiles[name] for name in PROFILE_NAMES})
        object.__setattr__(self, "paper", paper)

    def profile(self, name: str) -> Profile:
        """The profile called ``name``, or an error listing the profiles."""
        try:
            return self.profiles[name]
        except KeyError:
            raise ReproduceError(f"table {self.id} has no profile {name!r}; "
                                 f"choose one of {', '.join(self.profiles)}") from None

    def eps_label(self) -> str:
        """ε for people: ``8/255`` where ε·255 is a whole number, else ``0.3``; with the norm."""
        return f"{format_eps(self.eps_test)} ({'ℓ∞' if self.norm == 'linf' else 'ℓ2'})"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description of the spec (written to each run's ``spec.json``)."""
        return to_jsonable(self)


def format_eps(eps: float) -> str:
    """ε for people: a short decimal as it is (``0.3``, ``1.58``), else ``k/255``.

    The papers' scripts write 8/255 as ``0.03137`` and 2/255 as ``0.0078425``: a value within 0.1 %
    of k/255 is shown as ``k/255``, one within 0.001/255 of a tenth as ``8.8/255``.
    """
    if abs(eps - round(eps, 4)) < 1e-12:
        return f"{eps:g}"
    scaled = eps * 255
    if round(scaled) > 0 and abs(scaled - round(scaled)) <= 1e-3 * round(scaled):
        return f"{round(scaled)}/255"
    if abs(scaled - round(scaled, 1)) <= 1e-3:
        return f"{round(scaled, 1):g}/255"
    return f"{eps:.4g}"


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, mappings, sequences, paths and enums as JSON values (unknown objects as ``repr``)."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if _is_dataclass_instance(obj):
        out: dict[str, Any] = {"__type__": f"{type(obj).__module__}:{type(obj).__qualname__}"}
        for f in dataclasses.fields(obj):
            out[f.name] = to_jsonable(getattr(obj, f.name))
        return out
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    return repr(obj)


@dataclass(frozen=True)
class RunContext:
    """What the runner hands an experiment besides the spec and the profile.

    ``run_dir`` exists when the experiment is called. The experiment writes its TSV logs there
    (``train.log``, ``test.log``: a header row with an ``epoch`` column and metric columns, one row
    per epoch; :meth:`log` does exactly that), its checkpoints, and anything else it wants kept.
    ``resume`` asks it to continue from the newest checkpoint in ``run_dir``; ``eval_only`` names a
    trained checkpoint to certify instead of training. ``data_dir`` is None when not given: the
    experiment then uses certcore's default (``$CERTCORE_DATA``, else ``~/.cache/certcore``).
    """

    run_dir: Path
    data_dir: Path | None
    device: str
    resume: bool
    eval_only: Path | None
    seed: int

    def log(self, name: str, **row: float | int | str) -> None:
        """Append ``row`` to the TSV log ``run_dir/name``, writing the header first if the file is new."""
        path = Path(self.run_dir) / name
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", encoding="utf-8") as handle:
            if new:
                handle.write("\t".join(row) + "\n")
            handle.write("\t".join(str(v) for v in row.values()) + "\n")
