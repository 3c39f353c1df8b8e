"""The certcore ops as torch ops: schemas, opcheck, torch.compile, backend(), fallback to the reference."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import certcore
from certcore.ops import _registry, bound_inf_dist, norm_dist

OPS = torch.ops.certcore


def test_schemas_match_the_python_copy() -> None:
    """ops/_registry.SCHEMAS (used when certcore._C is missing) must equal what is registered."""
    for name, schema in _registry.SCHEMAS.items():
        registered = getattr(OPS, name).default._schema
        assert registered == torch._C.parse_schema(f"certcore::{schema}"), name


def test_backend_reports_every_op() -> None:
    info = certcore.backend()
    assert set(info) == {"norm_dist", "bound_inf_dist"}
    cpu = certcore.backend("cpu")
    assert all(v in {"cpu kernel", "reference"} for v in cpu.values())
    if _registry.MODE == "reference":
        assert set(cpu.values()) == {"reference"}
    elif _registry.C_IMPORT_ERROR is None:
        assert set(cpu.values()) == {"cpu kernel"}
    assert certcore.backend("meta") == {"norm_dist": "reference", "bound_inf_dist": "reference"}


def _nd_samples():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    return x, w


@pytest.mark.parametrize("p", [2.0, 2.5, math.inf])
@pytest.mark.parametrize("need_argmax", [False, True])
def test_opcheck_norm_dist_forward(p: float, need_argmax: bool) -> None:
    x, w = _nd_samples()
    # at p = inf without the argmax the op is not differentiable (its backward says so)
    differentiable = need_argmax or not math.isinf(p)
    x.requires_grad_(differentiable)
    w.requires_grad_(differentiable)
    torch.library.opcheck(OPS.norm_dist_forward.default, (x, w, p, 2, need_argmax))


@pytest.mark.parametrize("p", [3.0, math.inf])
def test_opcheck_norm_dist_backward(p: float) -> None:
    x, w = _nd_samples()
    y, arg = OPS.norm_dist_forward(x, w, p, 2, True)
    gy = torch.randn_like(y)
    for mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(OPS.norm_dist_backward.default, (gy, x, w, y, arg, p, 2, mask))


def test_opcheck_bound_inf_dist() -> None:
    x, w = _nd_samples()
    lower, upper = (x - 0.5).requires_grad_(True), (x + 0.5).requires_grad_(True)
    torch.library.opcheck(OPS.bound_inf_dist_forward.default, (lower, upper, w.requires_grad_(True), 2))
    yl, yu, al, au = OPS.bound_inf_dist_forward(lower.detach(), upper.detach(), w.detach(), 2)
    for mask in ([True, True, True], [False, True, False]):
        torch.library.opcheck(
            OPS.bound_inf_dist_backward.default,
            (torch.randn_like(yl), torch.randn_like(yu), al, au, w.detach(), 8, 2, mask),
        )


class _TinyDistNet(torch.nn.Module):
    """Linear -> ℓp-distance layer (FC) -> ℓp-distance conv layer on unfolded patches -> sum."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.inp = torch.nn.Linear(12, 2 * 4 * 4)
        self.w1 = torch.nn.Parameter(torch.randn(8, 2 * 9))
        self.w2 = torch.nn.Parameter(torch.randn(6, 8 * 4 * 4 // 2))

    def forward(self, x):
        h = self.inp(x).view(-1, 2, 4, 4)
        patches = torch.nn.functional.unfold(h, 3, padding=1)  # (B, 18, 16)
        h = norm_dist(patches, self.w1, self.p)  # (B, 8, 16)
        return norm_dist(h.flatten(1), self.w2, self.p, groups=2)


@pytest.mark.parametrize("p", [8.0, math.inf])
def test_torch_compile_small_model(p: float) -> None:
    torch.manual_seed(0)
    model = _TinyDistNet(p)
    x = torch.randn(4, 12)
    eager = model(x)
    eager.sum().backward()
    grads = [q.grad.clone() for q in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, eager)
    for q, g in zip(model.parameters(), grads):
        torch.testing.assert_close(q.grad, g)


@pytest.mark.slow
def test_torch_compile_inductor() -> None:
    torch.manual_seed(0)
    model = _TinyDistNet(math.inf)
    x = torch.randn(4, 12)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_inf_forward_without_argmax_refuses_backward() -> None:
    x, w = _nd_samples()
    x.requires_grad_(True)
    y, _ = OPS.norm_dist_forward(x, w, math.inf, 2, False)
    with pytest.raises(RuntimeError, match="need_argmax=False"):
        y.sum().backward()


def test_torch_compile_bound_inf_dist() -> None:
    w = torch.randn(6, 10, requires_grad=True)

    def f(lo, up):
        yl, yu = bound_inf_dist(lo, up, w)
        return (yu - yl).sum()

    lo = torch.randn(3, 10)
    up = lo + 1
    torch.testing.assert_close(torch.compile(f, backend="aot_eager", fullgraph=True)(lo, up), f(lo, up))


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


_FALLBACK_CHECK = """
    import math, warnings
    import torch
    import certcore
    from certcore import ops
    print("BACKEND", certcore.backend("cpu"))
    x = torch.randn(4, 9, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    for p in (2.5, math.inf):
        assert torch.autograd.gradcheck(lambda a, b: ops.norm_dist(a, b, p, groups=3), (x, w))
    lo = x.detach() - 0.3
    yl, yu = ops.bound_inf_dist(lo, x.detach() + 0.3, w, groups=3)
    y = ops.norm_dist(x, w, math.inf, groups=3)
    assert (yl <= y).all() and (y <= yu).all()
    torch.library.opcheck(torch.ops.certcore.norm_dist_forward.default, (x, w, 3.0, 3, False))
    print("OK")
"""


def test_works_without_the_compiled_extension() -> None:
    """certcore._C missing: the schemas come from Python, the reference serves every op, one warning."""
    res = _run("import sys\nsys.modules['certcore._C'] = None\n" + textwrap.dedent(_FALLBACK_CHECK))
    assert res.returncode == 0, res.stderr
    assert "BACKEND {'norm_dist': 'reference', 'bound_inf_dist': 'reference'}" in res.stdout
    assert "OK" in res.stdout
    assert res.stderr.count("CertcoreFallbackWarning") == 1, res.stderr
    assert "certcore._C could not be imported" in res.stderr


def test_backend_env_switch_forces_the_reference_without_warning() -> None:
    res = _run(_FALLBACK_CHECK, env={"CERTCORE_BACKEND": "reference"})
    assert res.returncode == 0, res.stderr
    assert "BACKEND {'norm_dist': 'reference', 'bound_inf_dist': 'reference'}" in res.stdout
    assert "CertcoreFallbackWarning" not in res.stderr


def test_backend_env_switch_rejects_unknown_values() -> None:
    res = _run("import certcore.ops", env={"CERTCORE_BACKEND": "gpu"})
    assert res.returncode != 0 and "CERTCORE_BACKEND must be" in res.stderr


def test_compiled_mode_fails_loudly_without_the_extension() -> None:
    res = _run(
        "import sys\nsys.modules['certcore._C'] = None\nimport certcore.ops",
        env={"CERTCORE_BACKEND": "compiled"},
    )
    assert res.returncode != 0 and "CERTCORE_BACKEND=compiled" in res.stderr
