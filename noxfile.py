"""certkit's sessions: tests, tests-<pkg>, lint, demo, bench-*, build-certcore, reproduce-<table-id>.

    nox -s demo                      # train and certify a small model on the CPU, offline
    nox -s tests                     # every package in one environment, the whole suite
    nox -s tests-linfdist            # certcore + linfdist only: proves the package installs alone
    nox -s reproduce-linfdist-mnist03 -- --profile quick --data-dir ../shared/data

torch and torchvision are pinned below. certcore's compiled part is built once per source state
into a wheel cache (.nox/_wheels) without build isolation, then installed into each session.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
PYTHON = "3.11"
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
BUILD_TOOLS = ["setuptools>=64", "wheel", "ninja"]
TEST_DEPS = ["pytest>=8", "hypothesis>=6.100", "pytest-timeout"]
PAPER_PACKAGES = ["linfdist", "lirpa", "fastibp", "lipnorm", "gloro_torch"]
WHEEL_CACHE = ROOT / ".nox" / "_wheels"


def _load_table_ids() -> list[str]:
    """Table ids from reproduce/, read without importing torch (see reproduce/table_ids.py)."""
    path = ROOT / "reproduce" / "src" / "reproduce" / "table_ids.py"
    spec = importlib.util.spec_from_file_location("_certkit_table_ids", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.scan_table_ids()


def _certcore_fingerprint() -> str:
    """Hash of everything that goes into certcore's wheel, plus the build switches."""
    digest = hashlib.sha256()
    root = ROOT / "packages" / "certcore"
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part in {"build", "__pycache__"} or part.endswith(".egg-info")
                                      for part in path.relative_to(root).parts):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    for key in ("CERTCORE_CUDA", "CERTCORE_DEBUG", "TORCH_CUDA_ARCH_LIST", *TORCH):
        digest.update(f"{key}={os.environ.get(key, '')}".encode())
    return digest.hexdigest()[:16]


def install_certcore(session: nox.Session) -> None:
    """Install torch, then certcore from a wheel built once per source state (no build isolation)."""
    session.install(*TORCH)
    session.install(*BUILD_TOOLS)
    wheel_dir = WHEEL_CACHE / _certcore_fingerprint()
    wheels = sorted(wheel_dir.glob("certcore-*.whl"))
    if not wheels:
        tmp_dir = wheel_dir.with_suffix(".tmp")
        session.run(
            "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(tmp_dir), "packages/certcore"
        )
        tmp_dir.rename(wheel_dir)
        wheels = sorted(wheel_dir.glob("certcore-*.whl"))
    session.install(str(wheels[0]))


def install_packages(session: nox.Session, *names: str) -> None:
    """Install paper packages (and ``reproduce``) from the tree; certcore must be installed first."""
    # "./reproduce", not "reproduce": a bare name would make pip fetch an unrelated PyPI project.
    paths = ["./reproduce" if name == "reproduce" else f"./packages/{name}" for name in names]
    session.install("--no-build-isolation", *paths)


def run_pytest(session: nox.Session, *paths: str) -> None:
    # pytest runs in importlib mode (pyproject.toml), so the *installed* packages are tested.
    session.run("pytest", *paths, *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every package in one environment, the whole suite."""
    install_certcore(session)
    install_packages(session, *PAPER_PACKAGES, "reproduce")
    session.install(*TEST_DEPS)
    run_pytest(session, "tests")


def _make_package_tests(package: str):
    def package_tests(session: nox.Session) -> None:
        install_certcore(session)
        if package != "certcore":
            install_packages(session, package)
        session.install(*TEST_DEPS)
        run_pytest(session, f"tests/{package}")

    package_tests.__doc__ = (
        "certcore alone, only tests/certcore." if package == "certcore"
        else f"certcore + {package} only, and only tests/{package}."
    )
    return package_tests


for _package in ["certcore", *PAPER_PACKAGES]:
    nox.session(python=PYTHON, name=f"tests-{_package}", default=False)(_make_package_tests(_package))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Train and certify a small model on scikit-learn's digits, on the CPU, offline."""
    install_certcore(session)
    install_packages(session, *PAPER_PACKAGES, "reproduce")
    session.run("python", "-m", "reproduce.demo", *session.posargs)


@nox.session(python=PYTHON, name="build-certcore", default=False)
def build_certcore(session: nox.Session) -> None:
    """Build certcore's wheel (CPU kernels, plus CUDA ones wherever nvcc is present) into dist/."""
    session.install(*TORCH)
    session.install(*BUILD_TOOLS)
    session.run("pip", "wheel", "--no-build-isolation", "--no-deps", "-w", "dist", "packages/certcore")


@nox.session(python=PYTHON, name="bench-norm-dist", default=False)
def bench_norm_dist(session: nox.Session) -> None:
    """Time norm_dist against torch.cdist, the broadcast reference and a same-size matmul."""
    install_certcore(session)
    session.run("python", "benchmarks/norm_dist.py", *session.posargs)


def _make_reproduce(table_id: str):
    def reproduce(session: nox.Session) -> None:
        install_certcore(session)
        install_packages(session, *PAPER_PACKAGES, "reproduce")
        session.run("reproduce", "run", table_id, *session.posargs)

    reproduce.__doc__ = f"Reproduce table row {table_id} (pass -- --profile smoke|quick|full)."
    return reproduce


for _table_id in _load_table_ids():
    nox.session(python=PYTHON, name=f"reproduce-{_table_id}", default=False)(_make_reproduce(_table_id))
