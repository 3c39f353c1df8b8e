"""Every table spec, collected from the modules ``reproduce.tables.<pkg>``.

The spec modules are imported on first use (they import their paper package, hence torch), so
``reproduce --help`` stays fast. A module whose paper package is not installed makes its tables
unavailable, with the reason kept in :func:`unavailable`; it does not break the CLI.

    >>> from reproduce import registry
    >>> registry.get("linfdist-cifar8")          # doctest: +SKIP
    >>> registry.TABLES                           # doctest: +SKIP  (dict id -> TableSpec)
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import pkgutil
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from reproduce.spec import ID_PREFIXES, ReproduceError, TableSpec

TABLES_PACKAGE = "reproduce.tables"


class UnknownTableError(ReproduceError, LookupError):
    """A table id that no spec carries."""


@dataclass(frozen=True)
class UnavailableModule:
    """A spec module that could not be imported: ``missing`` when a dependency is absent, else ``broken``."""

    module: str
    kind: str  # "missing" | "broken"
    reason: str


_tables: dict[str, TableSpec] | None = None
_modules: dict[str, list[str]] = {}
_unavailable: dict[str, UnavailableModule] = {}


def _spec_modules() -> list[str]:
    package = importlib.import_module(TABLES_PACKAGE)
    return sorted(f"{TABLES_PACKAGE}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
                  if not info.name.startswith("_"))


def _specs_in(module: Any) -> list[TableSpec]:
    specs = [value for value in vars(module).values() if isinstance(value, TableSpec)]
    for value in vars(module).get("TABLES", ()):
        if isinstance(value, TableSpec) and all(value is not s for s in specs):
            specs.append(value)
    return specs


def _load() -> dict[str, TableSpec]:
    global _tables
    if _tables is not None:
        return _tables
    tables: dict[str, TableSpec] = {}
    for name in _spec_modules():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and not exc.name.startswith("reproduce"):
                _unavailable[name] = UnavailableModule(
                    name, "missing", f"needs {exc.name!r}, which is not installed ({exc})")
            else:
                _unavailable[name] = UnavailableModule(name, "broken", traceback.format_exc(limit=-3))
            continue
        except Exception:  # a bug in a spec module: report it, keep the other tables usable
            _unavailable[name] = UnavailableModule(name, "broken", traceback.format_exc(limit=-3))
            continue
        ids: list[str] = []
        for spec in _specs_in(module):
            if spec.id in tables:
                _unavailable[name] = UnavailableModule(
                    name, "broken", f"table id {spec.id!r} is defined twice (also in {_owner(spec.id)})")
                continue
            tables[spec.id] = spec
            ids.append(spec.id)
        _modules[name] = ids
    _tables = tables
    return tables


def _owner(table_id: str) -> str:
    return next((module for module, ids in _modules.items() if table_id in ids), "an earlier module")


def tables() -> dict[str, TableSpec]:
    """Every available spec, keyed by id (imports the spec modules on first call)."""
    return _load()


def modules() -> dict[str, list[str]]:
    """Spec module name -> the ids it defines (imported modules only)."""
    _load()
    return {name: list(ids) for name, ids in _modules.items()}


def unavailable() -> dict[str, UnavailableModule]:
    """Spec modules that could not be imported, with the reason."""
    _load()
    return dict(_unavailable)


def ids(package: str | None = None) -> list[str]:
    """Sorted ids, optionally of one package (``linfdist``, ``gloro_torch`` or its id prefix ``gloro``)."""
    specs = tables().values()
    if package is not None:
        package = normalize_package(package)
        specs = [s for s in specs if s.package == package]
    return sorted(s.id for s in specs)


def normalize_package(package: str) -> str:
    """``gloro`` / ``gloro-torch`` -> ``gloro_torch``; an unknown name is an error listing the packages."""
    candidate = package.replace("-", "_")
    for name, prefix in ID_PREFIXES.items():
        if candidate in (name, prefix):
            return name
    raise ReproduceError(f"unknown package {package!r}; the paper packages are {', '.join(ID_PREFIXES)}")


def get(table_id: str) -> TableSpec:
    """The spec with this id; an unknown id is an error naming the closest ids and all known ones."""
    specs = tables()
    if table_id in specs:
        return specs[table_id]
    lines = [f"unknown table id {table_id!r}."]
    close = difflib.get_close_matches(table_id, list(specs), n=3, cutoff=0.5)
    if close:
        lines.append(f"Did you mean: {', '.join(close)}?")
    lines.append(f"Known ids: {', '.join(sorted(specs))}." if specs else "No tables are available.")
    prefix = table_id.split("-", 1)[0]
    packages = {prefix, *[name for name, p in ID_PREFIXES.items() if p == prefix]}
    matching = {m: u for m, u in _unavailable.items() if m.rsplit(".", 1)[-1] in packages}
    for module, info in sorted(matching.items()):
        reason = info.reason.strip().splitlines()[-1].rstrip(".")
        lines.append(f"The tables of {module} are unavailable: {reason}.")
    if _unavailable and not matching:
        lines.append(f"Unavailable spec modules: {', '.join(sorted(_unavailable))} (see `reproduce list`).")
    lines.append("List them with `reproduce list`.")
    raise UnknownTableError(" ".join(lines))


def register(spec: TableSpec, *, replace: bool = False) -> None:
    """Add a spec that lives outside ``reproduce.tables`` (tests, notebooks)."""
    specs = tables()
    if not isinstance(spec, TableSpec):
        raise TypeError(f"register() takes a TableSpec, got {type(spec).__name__}")
    if spec.id in specs and not replace and specs[spec.id] is not spec:
        raise ReproduceError(f"table id {spec.id!r} is already registered; pass replace=True to replace it")
    specs[spec.id] = spec


def unregister(table_id: str) -> None:
    tables().pop(table_id, None)


@contextlib.contextmanager
def registered(*specs: TableSpec) -> Iterator[None]:
    """Register ``specs`` for the duration of a ``with`` block, then restore the registry."""
    before = dict(tables())
    try:
        for spec in specs:
            register(spec)
        yield
    finally:
        current = tables()
        current.clear()
        current.update(before)


def reload() -> dict[str, TableSpec]:
    """Forget what was loaded and import the spec modules again."""
    global _tables
    _tables = None
    _modules.clear()
    _unavailable.clear()
    return _load()


def __getattr__(name: str) -> Any:  # registry.TABLES, loaded lazily
    if name == "TABLES":
        return tables()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
