"""certcore.allocator.keep_freed_memory: set once per process, opt-out by environment variable."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

SNIPPET = """
from certcore.allocator import keep_freed_memory
first = keep_freed_memory()
print(first, keep_freed_memory(mmap_threshold=1 << 20) == first)
"""


def _run(env_value: str | None) -> list[str]:
    env = dict(os.environ)
    env.pop("CERTKIT_MALLOC_TUNING", None)
    if env_value is not None:
        env["CERTKIT_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_sets_the_thresholds_once_on_glibc():
    assert _run(None) == ["True", "True"]


def test_environment_variable_leaves_the_allocator_alone():
    assert _run("0") == ["False", "True"]
