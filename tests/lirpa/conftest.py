"""lirpa test options: ``--generate`` rewrites the golden files of ``test_golden.py``."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--generate",
        action="store_true",
        default=False,
        help="lirpa: rewrite tests/lirpa/golden/*.pt from the current engine (each bound is checked sound "
        "first) instead of comparing against them",
    )
