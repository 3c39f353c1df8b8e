"""Table ids read from the spec modules' source, without importing them.

The noxfile runs in an environment without torch, so it cannot import the specs; it reads the
``TableSpec(id="...")`` literals instead. ``tests/reproduce`` checks that this list equals the
registry's.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TABLES_DIR = Path(__file__).parent / "tables"

# {package}-{dataset}{eps}[-{variant}], e.g. linfdist-cifar8, gloro-mnist158, linfdist-cifar8-v1mlp
ID_PATTERN = re.compile(
    r"^(linfdist|lirpa|fastibp|lipnorm|gloro)-(mnist|cifar|tinyimagenet|imagenet64|digits)(\d+)(-[a-z0-9]+)?$"
)


def scan_table_ids(tables_dir: Path = TABLES_DIR) -> list[str]:
    """Return every ``id=`` string literal passed to ``TableSpec(...)`` in ``tables_dir/*.py``."""
    ids: list[str] = []
    for path in sorted(tables_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TableSpec":
                for kw in node.keywords:
                    value = kw.value
                    if kw.arg == "id" and isinstance(value, ast.Constant) and isinstance(value.value, str):
                        ids.append(value.value)
    return ids
