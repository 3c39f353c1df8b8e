"""Tests of the dense reference oracle (tests/lirpa/dense_reference.py) itself: hand-computed examples,
soundness on sampled and PGD points, exactness theorems, and the dense matrices of each layer."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from certcore.testing import check_bounds_sound


def _load_reference():
    # The tests run with --import-mode=importlib, so the oracle is loaded from its path; it is registered
    # as ``dense_reference`` so that every test module that loads it shares one module object.
    name = "dense_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("dense_reference.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


dr = _load_reference()
D = torch.float64
INF = math.inf


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _set(module: nn.Module, **tensors) -> nn.Module:
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(module, name).copy_(torch.as_tensor(value, dtype=getattr(module, name).dtype))
    return module


def _randomize_bn(bn: nn.Module, gen: torch.Generator) -> None:
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(0.3 * torch.randn(c, generator=gen, dtype=D))
        bn.running_var.copy_(0.5 + torch.rand(c, generator=gen, dtype=D))
        bn.weight.copy_(torch.randn(c, generator=gen, dtype=D))
        bn.bias.copy_(0.2 * torch.randn(c, generator=gen, dtype=D))


def _finish(model: nn.Sequential, seed: int) -> nn.Sequential:
    model = model.to(D).eval()
    gen = torch.Generator().manual_seed(seed + 1000)
    for m in model:
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            _randomize_bn(m, gen)
    return model


def mlp(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(
        dr.Normalize(torch.linspace(-0.2, 0.3, 6), torch.linspace(0.5, 1.5, 6)),
        nn.Linear(6, 8),
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.LeakyReLU(0.1),
        nn.Linear(8, 5),
    )
    return _finish(model, seed), (6,)


def cnn(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(
        dr.Normalize(torch.tensor([0.1, -0.2]).reshape(2, 1, 1), torch.tensor([0.7, 1.3]).reshape(2, 1, 1)),
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(36, 10),
        nn.BatchNorm1d(10),
        nn.ReLU(),
        nn.Linear(10, 4),
    )
    return _finish(model, seed), (2, 6, 6)


def dilated(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, dilation=2, padding=2, padding_mode="reflect"),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(75, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    )
    return _finish(model, seed), (1, 5, 5)


def linear_chain(seed: int):
    # Two affine layers before the first activation, and a LeakyReLU with slope > 0.5.
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.LeakyReLU(0.7), nn.Linear(6, 3)
    )
    return _finish(model, seed), (4,)


def conv_head(seed: int):
    # No final nn.Linear: C cannot be merged and is applied to the output box / forms instead.
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 3), nn.Flatten())
    return _finish(model, seed), (1, 5, 5)


MODELS = {"mlp": mlp, "cnn": cnn, "dilated": dilated, "linear_chain": linear_chain, "conv_head": conv_head}
EPS = {INF: 0.15, 2.0: 0.4, 1.0: 0.6}
METHODS = [
    ("ibp", {}),
    ("crown", {}),
    ("crown", {"relu_option": "same-slope"}),
    ("crown", {"relu_option": "zero-lb"}),
    ("crown", {"relu_option": "one-lb"}),
    ("crown", {"minimum_sparsity": 0.0}),
    ("crown", {"minimum_sparsity": 1.0}),
    ("crown-ibp", {}),
    ("forward", {}),
    ("forward", {"relu_option": "same-slope"}),
]


def bounds(method: str, model, x0, eps, norm, C=None, **kw):
    """Dispatch to the oracle; L∞ goes through x_L/x_U, Lp through x0/eps."""
    if norm == INF:
        args = (model, x0 - eps, x0 + eps, C)
        extra = {}
    else:
        args = (model, None, None, C)
        extra = {"norm": norm, "eps": eps, "x0": x0}
    if method == "ibp":
        return dr.ibp(*args, **extra)
    if method == "crown":
        return dr.crown(*args, **extra, **kw)
    if method == "crown-ibp":
        return dr.crown(*args, ibp_intermediate=True, **extra, **kw)
    if method == "forward":
        return dr.forward_mode(*args, **extra, **kw)
    raise ValueError(method)


def margin_C(model, x0) -> torch.Tensor:
    """Rows e_y - e_j (j != y) with y the clean prediction: (B, K-1, K)."""
    with torch.no_grad():
        logits = model(x0)
    B, K = logits.shape
    y = logits.argmax(1)
    C = torch.zeros(B, K - 1, K, dtype=D)
    for b in range(B):
        others = [j for j in range(K) if j != int(y[b])]
        for r, j in enumerate(others):
            C[b, r, int(y[b])] = 1.0
            C[b, r, j] = -1.0
    return C


def C_on_box(C, lo, hi):
    """Interval arithmetic of C (B, S, K) on the box [lo, hi] (B, K)."""
    Cp, Cn = C.clamp(min=0), C.clamp(max=0)
    lower = torch.einsum("bsk,bk->bs", Cp, lo) + torch.einsum("bsk,bk->bs", Cn, hi)
    upper = torch.einsum("bsk,bk->bs", Cp, hi) + torch.einsum("bsk,bk->bs", Cn, lo)
    return lower, upper


def sample_points(x0: torch.Tensor, eps: float, norm: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """(P, B, *shape) points of the ball: extreme points (corners / sphere / ±eps·e_i) and interior ones."""
    B, shape = x0.shape[0], x0.shape[1:]
    d = x0[0].numel()
    flat = x0.reshape(B, d)
    pts = []
    if norm == INF:
        if d <= 10:
            corners = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=D)
            pts.append(corners[:, None, :].expand(-1, B, d))
        signs = torch.randint(0, 2, (n, B, d), generator=gen).to(D) * 2 - 1
        pts.append(signs)
        pts.append(torch.rand(n, B, d, generator=gen, dtype=D) * 2 - 1)
        offsets = torch.cat(pts) * eps
    else:
        if norm == 1.0:
            vertices = torch.cat([torch.eye(d, dtype=D), -torch.eye(d, dtype=D)])
            pts.append(vertices[:, None, :].expand(-1, B, d))
            g = -torch.log(torch.rand(n, B, d, generator=gen, dtype=D))
            g = g * (torch.randint(0, 2, (n, B, d), generator=gen).to(D) * 2 - 1)
        else:
            g = torch.randn(n, B, d, generator=gen, dtype=D)
        g = g / torch.linalg.vector_norm(g, ord=norm, dim=-1, keepdim=True)
        pts.append(g)
        pts.append(g * torch.rand(n, B, 1, generator=gen, dtype=D) ** (1.0 / d))
        offsets = torch.cat(pts) * eps
    return (flat[None] + offsets).reshape(-1, B, *shape)


def evaluate(model, points: torch.Tensor, C=None) -> torch.Tensor:
    P, B = points.shape[:2]
    with torch.no_grad():
        out = model(points.reshape(P * B, *points.shape[2:])).reshape(P, B, -1)
    if C is not None:
        out = torch.einsum("bsk,pbk->pbs", C, out)
    return out


def assert_contains(lb, ub, values, what: str) -> None:
    tol = 1e-9 + 1e-9 * torch.maximum(lb.abs(), ub.abs())
    over = (values - ub - tol).max()
    under = (lb - tol - values).max()
    assert over <= 0 and under <= 0, (
        f"{what}: a point exceeds the bounds by {max(float(over), float(under)):.3g}"
    )


def assert_close(actual, expected, what: str, rtol: float = 1e-9, atol: float = 1e-9) -> None:
    expected = torch.as_tensor(expected, dtype=D)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"{what}: {actual} != {expected}"


# ----------------------------------------------------------------------------------------------
# 1. The toy example of auto_LiRPA (examples/simple/toy.py), by hand
# ----------------------------------------------------------------------------------------------


def toy_model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False)).to(D)
    _set(model[0], weight=[[1.0, -1.0], [2.0, -1.0]])
    _set(model[2], weight=[[1.0, -1.0]])
    return model


TOY_BOX = (torch.tensor([[-1.0, -2.0]], dtype=D), torch.tensor([[2.0, 1.0]], dtype=D))

# Hand derivation, x1 ∈ [-1, 2], x2 ∈ [-2, 1], z = relu(h1) - relu(h2):
#   h1 = x1 - x2 ∈ [-1 - 1, 2 + 2] = [-2, 4];  h2 = 2·x1 - x2 ∈ [-2 - 1, 4 + 2] = [-3, 6]
#   (h2's upper end is 6, at x = (2, -2); both pre-activations are unstable).
# IBP: relu(h1) ∈ [0, 4], relu(h2) ∈ [0, 6], z ∈ [0 - 6, 4 - 0] = [-6, 4].
# CROWN (the first layer's bounds are exact): chords h1: slope 4/6 = 2/3, intercept 2·2/3 = 4/3;
#   h2: slope 6/9 = 2/3, intercept 3·2/3 = 2. Adaptive lower slopes: 2/3 > 0.5, so 1 for both.
#   lower: z >= h1 - (2/3·h2 + 2) = -x1/3 - x2/3 - 2, minimum at x = (2, 1): -2/3 - 1/3 - 2 = -3.
#   upper: z <= (2/3·h1 + 4/3) - h2 = -4/3·x1 + x2/3 + 4/3, maximum at x = (-1, 1): 4/3 + 1/3 + 4/3 = 3.
#   So lA = [-1/3, -1/3], lbias = -2, uA = [-4/3, 1/3], ubias = 4/3 and CROWN = [-3, 3].
# CROWN-IBP = CROWN (one activation layer, exact first-layer bounds); forward mode gives the same
#   linear forms (one hidden layer), so [-3, 3] too.
# same-slope (lower slopes 2/3): lower h·2/3 - (2/3·h2 + 2) = -2/3·x1 - 2 -> -10/3 at x1 = 2;
#   upper (2/3·h1 + 4/3) - 2/3·h2 = -2/3·x1 + 4/3 -> 2 at x1 = -1.  So [-10/3, 2].
# zero-lb (lower slopes 0): lower -(2/3·h2 + 2) = -4/3·x1 + 2/3·x2 - 2 -> -8/3 - 4/3 - 2 = -6;
#   upper 2/3·h1 + 4/3 = 2/3·x1 - 2/3·x2 + 4/3 -> 4/3 + 4/3 + 4/3 = 4.  So [-6, 4].
# one-lb: lower slopes 1, as adaptive here: [-3, 3].
TOY_EXPECTED = {
    ("ibp", ""): (-6.0, 4.0),
    ("crown", "adaptive"): (-3.0, 3.0),
    ("crown", "same-slope"): (-10.0 / 3.0, 2.0),
    ("crown", "zero-lb"): (-6.0, 4.0),
    ("crown", "one-lb"): (-3.0, 3.0),
    ("crown-ibp", "adaptive"): (-3.0, 3.0),
    ("forward", "adaptive"): (-3.0, 3.0),
}


@pytest.mark.parametrize("method,option", list(TOY_EXPECTED))
def test_toy_example_hand_computed(method, option):
    model = toy_model()
    x_L, x_U = TOY_BOX
    if method == "ibp":
        lb, ub = dr.ibp(model, x_L, x_U)
    elif method == "forward":
        lb, ub = dr.forward_mode(model, x_L, x_U, relu_option=option)
    else:
        lb, ub = dr.crown(model, x_L, x_U, relu_option=option, ibp_intermediate=method == "crown-ibp")
    expected_lb, expected_ub = TOY_EXPECTED[(method, option)]
    assert_close(lb, [[expected_lb]], f"{method} {option} lower", rtol=0, atol=1e-12)
    assert_close(ub, [[expected_ub]], f"{method} {option} upper", rtol=0, atol=1e-12)


def test_toy_example_matches_published_output():
    # auto_LiRPA's README / installation notes print for examples/simple/toy.py:
    #   IBP bounds: lower=-6.0, upper=4.0;  CROWN bounds: lower=-3.0, upper=3.0
    #   {'lA': [[[-0.3333, -0.3333]]], 'uA': [[[-1.3333, 0.3333]]], 'lbias': [[-2.]], 'ubias': [[1.3333]]}
    model = toy_model()
    x_L, x_U = TOY_BOX
    pre = dr.pre_activation_bounds(model, x_L, x_U)
    assert_close(pre[0][0], [[-2.0, -3.0]], "h lower", rtol=0, atol=1e-12)
    assert_close(pre[0][1], [[4.0, 6.0]], "h upper", rtol=0, atol=1e-12)
    inp = dr._InputSet(x_L, x_U, INF, None, None)
    layers = dr.dense_layers(model, (2,))
    pre_map = dr._crown_pre_bounds(layers, inp, "adaptive", False, 0.9)
    lam = torch.ones(1, 1, 1, dtype=D)
    lb, ub, (A_L, c_L, A_U, c_U) = dr._backward(layers, pre_map, len(layers), lam, inp, "adaptive")
    assert_close(A_L, [[[-1 / 3, -1 / 3]]], "lA")
    assert_close(c_L, [[-2.0]], "lbias")
    assert_close(A_U, [[[-4 / 3, 1 / 3]]], "uA")
    assert_close(c_U, [[4 / 3]], "ubias")
    assert_close(lb, [[-3.0]], "lb")
    assert_close(ub, [[3.0]], "ub")


# ----------------------------------------------------------------------------------------------
# 2. The sparse intermediate-bound scheme, by hand
# ----------------------------------------------------------------------------------------------


def sparse_model() -> nn.Sequential:
    # h = (x, -x); r = relu(h); g = (r1 + r2 - 0.5, r1 + r2 + 0.5, -r1 - r2 + 2.5);
    # q = sum relu(g) - 6; out = relu(q).
    model = nn.Sequential(
        nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1), nn.ReLU(), nn.Linear(1, 1)
    ).to(D)
    _set(model[0], weight=[[1.0], [-1.0]], bias=[0.0, 0.0])
    _set(model[2], weight=[[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]], bias=[-0.5, 0.5, 2.5])
    _set(model[4], weight=[[1.0, 1.0, 1.0]], bias=[-6.0])
    _set(model[6], weight=[[1.0]], bias=[0.0])
    return model


def test_sparse_intermediate_bounds_by_hand():
    # Sample A: x ∈ [-1, 1]. h1, h2 ∈ [-1, 1]: chord slope 1/2, intercept 1/2, adaptive lower slope 0
    #   (1/2 is not > 0.5). Reference (IBP from the final h bounds): r1, r2 ∈ [0, 1], so
    #   g1 ∈ [-0.5, 1.5] (unstable), g2 ∈ [0.5, 2.5], g3 ∈ [0.5, 2.5] (both stable).
    #   CROWN for g1: lower r ≥ 0 -> -0.5; upper (x/2 + 1/2) + (-x/2 + 1/2) - 0.5 = 0.5.
    #   Alone, only g1 is unstable (1 <= 0.9·3): g = [-0.5, 0.5], [0.5, 2.5] (IBP kept), [0.5, 2.5].
    #   q's reference is IBP from these FINAL g bounds: relu(g) ∈ [0, 0.5] + [0.5, 2.5] + [0.5, 2.5],
    #   q ∈ [1 - 6, 5.5 - 6] = [-5, -0.5]: stable, kept. (A pure IBP pass would give g1 ∈ [-0.5, 1.5],
    #   q ∈ [-5, 0.5], unstable, and CROWN [-3, -2.5]: q = relu(|x| - 0.5) - 3 exactly.)
    # Sample C: x ∈ [-3, 3]: chord slope 1/2, intercept 3/2; reference r ∈ [0, 3]:
    #   g1 ∈ [-0.5, 5.5], g2 ∈ [0.5, 6.5], g3 ∈ [-3.5, 2.5]: g1 and g3 unstable.
    #   CROWN g1: [-0.5, 3/2 + 3/2 - 0.5] = [-0.5, 2.5]; g3: lower -(3/2) - (3/2) + 2.5 = -0.5, upper 2.5.
    # Batch (A, C): the unstable set is the union {g1, g3} (2 <= 2.7, sparse), so A's g3, stable under
    #   its own reference, gets CROWN: -(x/2 + 1/2) - (-x/2 + 1/2) + 2.5 = 1.5 -> [1.5, 2.5].
    #   q is unstable for C (reference [0.5 - 6, 11.5 - 6]), so A's q gets CROWN too: with g1's
    #   relaxation (slope 1/2, intercept 1/4, lower slope 0) and g2, g3 exact, q ∈ [-3, -2.5].
    # Dense (minimum_sparsity 0.3: 1 > 0.9): every g takes CROWN; A's g2 = [0.5, 1.5], g3 = [1.5, 2.5],
    #   and q's reference [0 + 0.5 + 1.5 - 6, 0.5 + 1.5 + 2.5 - 6] = [-4, -1.5] is stable, kept.
    # CROWN-IBP: pure IBP, A's g = [-0.5, 1.5], [0.5, 2.5], [0.5, 2.5], q = [-5, 0.5].
    # Final bound of the two-activation prefix for A: relu(|x| - 0.5) + 3 ∈ [3, 3.5], found exactly.
    model = sparse_model()
    A_L, A_U = torch.tensor([[-1.0]], dtype=D), torch.tensor([[1.0]], dtype=D)
    AC_L, AC_U = torch.tensor([[-1.0], [-3.0]], dtype=D), torch.tensor([[1.0], [3.0]], dtype=D)

    alone = dr.pre_activation_bounds(model, A_L, A_U)
    assert_close(alone[0][0], [[-1.0, -1.0]], "A: h lower")
    assert_close(alone[0][1], [[1.0, 1.0]], "A: h upper")
    assert_close(alone[1][0], [[-0.5, 0.5, 0.5]], "A: g lower")
    assert_close(alone[1][1], [[0.5, 2.5, 2.5]], "A: g upper")
    assert_close(alone[2][0], [[-5.0]], "A: q lower")
    assert_close(alone[2][1], [[-0.5]], "A: q upper")

    batch = dr.pre_activation_bounds(model, AC_L, AC_U)
    assert_close(batch[1][0], [[-0.5, 0.5, 1.5], [-0.5, 0.5, -0.5]], "A,C: g lower")
    assert_close(batch[1][1], [[0.5, 2.5, 2.5], [2.5, 6.5, 2.5]], "A,C: g upper")
    assert_close(batch[2][0][0], [-3.0], "A,C: A's q lower")
    assert_close(batch[2][1][0], [-2.5], "A,C: A's q upper")

    dense = dr.pre_activation_bounds(model, A_L, A_U, minimum_sparsity=0.3)
    assert_close(dense[1][0], [[-0.5, 0.5, 1.5]], "dense: g lower")
    assert_close(dense[1][1], [[0.5, 1.5, 2.5]], "dense: g upper")
    assert_close(dense[2][0], [[-4.0]], "dense: q lower")
    assert_close(dense[2][1], [[-1.5]], "dense: q upper")

    crown_ibp = dr.pre_activation_bounds(model, A_L, A_U, method="crown-ibp")
    assert_close(crown_ibp[1][0], [[-0.5, 0.5, 0.5]], "CROWN-IBP: g lower")
    assert_close(crown_ibp[1][1], [[1.5, 2.5, 2.5]], "CROWN-IBP: g upper")
    assert_close(crown_ibp[2][0], [[-5.0]], "CROWN-IBP: q lower")
    assert_close(crown_ibp[2][1], [[0.5]], "CROWN-IBP: q upper")

    prefix = nn.Sequential(*list(model)[:4], nn.Linear(3, 1)).to(D)
    _set(prefix[4], weight=[[1.0, 1.0, 1.0]], bias=[0.0])
    lb, ub = dr.crown(prefix, A_L, A_U)
    assert_close(lb, [[3.0]], "A: final lower")
    assert_close(ub, [[3.5]], "A: final upper")
    lb, ub = dr.crown(model, A_L, A_U)
    assert_close(lb, [[0.0]], "A: out lower")
    assert_close(ub, [[0.0]], "A: out upper")


# ----------------------------------------------------------------------------------------------
# 3. Soundness
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", [INF, 2.0, 1.0], ids=["linf", "l2", "l1"])
@pytest.mark.parametrize("name", list(MODELS))
def test_sound_on_sampled_points(name, norm):
    model, shape = MODELS[name](seed=len(name))
    gen = torch.Generator().manual_seed(7)
    x0 = torch.randn(3, *shape, generator=gen, dtype=D)
    eps = EPS[norm]
    C = margin_C(model, x0)
    points = sample_points(x0, eps, norm, 200, gen)
    values = {None: evaluate(model, points), "C": evaluate(model, points, C)}
    n_unstable = 0
    for method, kw in METHODS:
        for key, spec in ((None, None), ("C", C)):
            lb, ub = bounds(method, model, x0, eps, norm, spec, **kw)
            assert lb.dtype == D and ub.dtype == D
            assert lb.shape == values[key].shape[1:]
            assert_contains(lb, ub, values[key], f"{name} {method} {kw} norm={norm} C={key}")
    x_L, x_U = (x0 - eps, x0 + eps) if norm == INF else (None, None)
    for lo, hi in dr.pre_activation_bounds(model, x_L, x_U, norm=norm, eps=eps, x0=x0):
        n_unstable += int(((lo < 0) & (hi > 0)).sum())
    assert n_unstable > 0, "the test region should make some neurons unstable"


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "linear_chain"])
def test_sound_under_pgd(name, norm):
    # certcore's soundness kit: centre, uniform, corner / sphere points and PGD on every bound.
    model, shape = MODELS[name](seed=3)
    x0 = torch.randn(2, *shape, generator=torch.Generator().manual_seed(11), dtype=D)
    p = INF if norm == "inf" else 2.0
    eps = EPS[p]
    C = margin_C(model, x0)

    def margins(x):
        k = x.shape[0] // C.shape[0]
        return torch.einsum("bsk,bk->bs", C.repeat(k, 1, 1), model(x))

    for method, kw in [("crown", {}), ("crown-ibp", {}), ("forward", {}), ("ibp", {})]:
        check_bounds_sound(
            margins,
            x0,
            eps,
            lambda box, m=method, k=kw: bounds(m, model, x0, eps, p, C, **k),
            norm=norm,
            n_samples=32,
            pgd_steps=10,
            pgd_coords=8,
        )


def test_forward_mode_sound_on_leaky_relu_regression():
    # auto_LiRPA 0.7.1's forward mode excludes f(x) itself on this model (reference addendum): its
    # LeakyReLU forms are 0 <= y <= 0 for neurons with u <= 0.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.1), nn.Linear(8, 5)).to(D).eval()
    x = torch.randn(3, 6).to(D)
    eps = 0.01
    lb, ub = dr.forward_mode(model, x - eps, x + eps)
    points = sample_points(x, eps, INF, 100, torch.Generator().manual_seed(0))
    assert_contains(lb, ub, evaluate(model, x[None]), "forward at the centre")
    assert_contains(lb, ub, evaluate(model, points), "forward on samples")
    pre = dr.pre_activation_bounds(model, x - eps, x + eps, method="forward")
    assert bool((pre[0][1] <= 0).any()), "the example needs a neuron with u <= 0"


@pytest.mark.parametrize("slope", [0.0, 0.1, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("option", dr.RELU_OPTIONS)
def test_relaxation_lines_enclose_the_activation(option, slope):
    gen = torch.Generator().manual_seed(5)
    lower = torch.cat(
        [torch.randn(200, generator=gen, dtype=D) * 2, torch.tensor([-1.0, 0.0, 0.0, -2.0], dtype=D)]
    )
    upper = lower + torch.cat(
        [torch.rand(200, generator=gen, dtype=D) * 3, torch.tensor([1.0, 1.0, 0.0, 1.0])]
    )
    layer = ("relu",) if slope == 0.0 else ("leaky_relu", slope)
    d, intercept, k = dr._relaxation(layer, lower[None], upper[None], option)
    t = torch.linspace(0, 1, 101, dtype=D)[:, None]
    xs = lower[None] + t * (upper - lower)[None]
    ys = torch.where(xs >= 0, xs, slope * xs)
    assert bool((k * xs <= ys + 1e-12).all()), "lower line above the activation"
    assert bool((d * xs + intercept >= ys - 1e-12).all()), "upper line below the activation"
    assert bool(((k >= slope - 1e-12) & (k <= 1 + 1e-12) & (d >= slope - 1e-12) & (d <= 1 + 1e-12)).all())
    positive = lower[None] >= 0
    assert bool((d[positive] == 1).all() & (k[positive] == 1).all() & (intercept[positive] == 0).all())
    negative = (upper[None] <= 0) & (lower[None] < -1e-8)
    assert bool((d[negative] == slope).all() & (intercept[negative] == 0).all())
    if slope <= 0.5 or option != "adaptive":
        assert bool((k[negative] == slope).all()), "stable negative neurons are exact"
    else:
        assert bool((k[negative] == 1).all()), "auto_LiRPA's adaptive rule: d = a > 0.5 gives slope 1"


# ----------------------------------------------------------------------------------------------
# 4. Theorems
# ----------------------------------------------------------------------------------------------


def affine_models():
    torch.manual_seed(21)
    yield "linear", nn.Sequential(nn.Linear(5, 3)), (5,)
    yield (
        "normalize+linear",
        nn.Sequential(dr.Normalize(torch.linspace(-1, 1, 5), torch.linspace(0.5, 2, 5)), nn.Linear(5, 3)),
        (5,),
    )
    yield "conv", nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Flatten()), (2, 5, 5)
    yield (
        "normalize+conv+bn",
        nn.Sequential(
            dr.Normalize(
                torch.tensor([0.2, -0.1]).reshape(2, 1, 1), torch.tensor([0.5, 2.0]).reshape(2, 1, 1)
            ),
            nn.Conv2d(2, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.Flatten(),
        ),
        (2, 4, 4),
    )


def _extreme_inputs(A: torch.Tensor, x0: torch.Tensor, eps: float, norm: float):
    """Minimisers and maximisers of each row of A (B, S, n) over the ball around x0 (B, n): (B, S, n) each."""
    if norm == INF:
        step = eps * torch.sign(A)
    elif norm == 2.0:
        step = eps * A / torch.linalg.vector_norm(A, dim=-1, keepdim=True)
    else:
        i = A.abs().argmax(-1, keepdim=True)
        step = torch.zeros_like(A).scatter(-1, i, eps * torch.sign(torch.gather(A, -1, i)))
    return x0[:, None, :] - step, x0[:, None, :] + step


@pytest.mark.parametrize("norm", [INF, 2.0, 1.0], ids=["linf", "l2", "l1"])
def test_single_affine_layer_is_exact_for_every_method(norm):
    for name, model, shape in affine_models():
        model = _finish(model, 4)
        gen = torch.Generator().manual_seed(2)
        x0 = torch.randn(2, *shape, generator=gen, dtype=D)
        layers = dr.dense_layers(model, shape)
        W, b = torch.eye(x0[0].numel(), dtype=D), torch.zeros(x0[0].numel(), dtype=D)
        for _, Wj, bj in layers:
            W, b = Wj @ W, Wj @ b + bj
        n_out = W.shape[0]
        C = torch.randn(2, 4, n_out, generator=gen, dtype=D)
        for spec in (None, C):
            A = W.expand(2, -1, -1) if spec is None else spec @ W
            x_min, x_max = _extreme_inputs(A, x0.reshape(2, -1), EPS[norm], norm)
            f_min = torch.einsum("bsn,bsn->bs", A, x_min) + (b if spec is None else spec @ b)
            f_max = torch.einsum("bsn,bsn->bs", A, x_max) + (b if spec is None else spec @ b)
            # The extreme points are inputs of the model: its own output there must be the bound.
            out_min = evaluate(model, x_min.reshape(2, -1, *shape).transpose(0, 1), spec)
            rows = torch.arange(A.shape[1])
            assert_close(out_min[rows, :, rows].t(), f_min, f"{name}: model at the minimiser", rtol=1e-12)
            for method, kw in METHODS:
                lb, ub = bounds(method, model, x0, EPS[norm], norm, spec, **kw)
                what = f"{name} {method} {kw} norm={norm} C={spec is not None}"
                if method == "ibp" and spec is not None and not isinstance(model[-1], nn.Linear):
                    # IBP merges C only into a final nn.Linear; otherwise C meets the output box.
                    box_lb, box_ub = C_on_box(spec, *bounds("ibp", model, x0, EPS[norm], norm))
                    assert_close(lb, box_lb, what + " lower")
                    assert_close(ub, box_ub, what + " upper")
                    continue
                assert_close(lb, f_min, what + " lower")
                assert_close(ub, f_max, what + " upper")


def stable_models():
    torch.manual_seed(8)
    yield mlp(5)
    yield cnn(6)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.LeakyReLU(0.3), nn.Linear(6, 3)
    )
    yield _finish(model, 7), (4,)


@pytest.mark.parametrize("norm", [INF, 2.0, 1.0], ids=["linf", "l2", "l1"])
def test_no_unstable_neuron_gives_the_exact_linear_bound(norm):
    # With every neuron stable the network is affine on the ball, the relaxations are exact (slope
    # <= 0.5 for the LeakyReLUs), and CROWN, CROWN-IBP and forward mode return its exact range.
    eps = 1e-6
    for model, shape in stable_models():
        x0 = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3), dtype=D)
        x_L, x_U = (x0 - eps, x0 + eps) if norm == INF else (None, None)
        for lo, hi in dr.pre_activation_bounds(model, x_L, x_U, method="ibp", norm=norm, eps=eps, x0=x0):
            assert not bool(((lo < 0) & (hi > 0)).any()), "premise: no IBP-unstable neuron"
        J = torch.stack(
            [
                torch.autograd.functional.jacobian(model, x0[i : i + 1]).reshape(-1, x0[0].numel())
                for i in range(2)
            ]
        )
        with torch.no_grad():
            f0 = model(x0)
        dual = 1.0 if norm == INF else (math.inf if norm == 1.0 else 2.0)
        dev = eps * torch.linalg.vector_norm(J, ord=dual, dim=-1)
        for method, kw in METHODS:
            if method == "ibp":
                continue
            lb, ub = bounds(method, model, x0, eps, norm, None, **kw)
            assert_close(lb, f0 - dev, f"{method} {kw} lower", rtol=1e-7, atol=1e-12)
            assert_close(ub, f0 + dev, f"{method} {kw} upper", rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("norm", [INF, 2.0, 1.0], ids=["linf", "l2", "l1"])
def test_ibp_with_merged_C_is_never_looser_than_C_on_the_logit_box(norm):
    # Merging C into the last affine map bounds C·(W h + b) exactly over the box of h, which lies inside
    # C applied to the box of W h + b.
    for name in ("mlp", "cnn", "dilated", "linear_chain"):
        model, shape = MODELS[name](seed=2)
        x0 = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1), dtype=D)
        C = margin_C(model, x0)
        applied_lo, applied_hi = C_on_box(C, *bounds("ibp", model, x0, EPS[norm], norm))
        merged_lo, merged_hi = bounds("ibp", model, x0, EPS[norm], norm, C)
        assert bool((merged_lo >= applied_lo - 1e-9).all()), name
        assert bool((merged_hi <= applied_hi + 1e-9).all()), name
        assert bool((merged_lo > applied_lo + 1e-6).any()), f"{name}: merging should help somewhere"


@pytest.mark.parametrize("norm", [INF, 2.0, 1.0], ids=["linf", "l2", "l1"])
def test_one_hidden_layer_crown_crown_ibp_and_forward_agree(norm):
    # One activation layer whose inputs are bounded exactly by all three methods, then the same
    # relaxation and the same final linear map: the three bounds are identical.
    torch.manual_seed(13)
    model = nn.Sequential(dr.Normalize(0.1, 0.8), nn.Linear(5, 12), nn.LeakyReLU(0.2), nn.Linear(12, 4))
    model = _finish(model, 0)
    x0 = torch.randn(3, 5, generator=torch.Generator().manual_seed(4), dtype=D)
    C = margin_C(model, x0)
    for spec in (None, C):
        for option in dr.RELU_OPTIONS:
            ref = bounds("crown", model, x0, EPS[norm], norm, spec, relu_option=option)
            for method in ("crown-ibp", "forward"):
                got = bounds(method, model, x0, EPS[norm], norm, spec, relu_option=option)
                assert_close(got[0], ref[0], f"{method} {option} lower", rtol=1e-10, atol=1e-12)
                assert_close(got[1], ref[1], f"{method} {option} upper", rtol=1e-10, atol=1e-12)


def test_ibp_is_inclusion_monotone():
    for name in ("mlp", "cnn", "conv_head"):
        model, shape = MODELS[name](seed=9)
        gen = torch.Generator().manual_seed(9)
        x_L = torch.randn(2, *shape, generator=gen, dtype=D)
        x_U = x_L + torch.rand(2, *shape, generator=gen, dtype=D) * 0.4
        t = torch.rand(2, *shape, generator=gen, dtype=D)
        in_L = x_L + 0.5 * t * (x_U - x_L)
        in_U = in_L + 0.5 * (x_U - in_L)
        outer = dr.ibp(model, x_L, x_U)
        inner = dr.ibp(model, in_L, in_U)
        assert bool((inner[0] >= outer[0] - 1e-12).all() & (inner[1] <= outer[1] + 1e-12).all()), name


def test_a_degenerate_box_gives_the_output_itself():
    # x_L == x_U (allowed by auto_LiRPA, issue #67): every neuron is stable with exact relaxations, so
    # every bound collapses onto f(x).
    for name in ("mlp", "cnn", "dilated"):
        model, shape = MODELS[name](seed=1)
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(6), dtype=D)
        with torch.no_grad():
            fx = model(x)
        for method, kw in METHODS:
            lb, ub = bounds(method, model, x, 0.0, INF, None, **kw)
            assert_close(lb, fx, f"{name} {method} {kw} lower", rtol=1e-12, atol=1e-12)
            assert_close(ub, fx, f"{name} {method} {kw} upper", rtol=1e-12, atol=1e-12)


def test_adaptive_leaky_relu_above_one_half_is_not_exact_on_stable_negative_neurons():
    # auto_LiRPA's adaptive rule takes lower slope 1 whenever the upper slope exceeds 0.5, and for a
    # LeakyReLU(0.7) neuron with u <= 0 the upper slope is 0.7: sound, but not exact. The other options
    # keep slope a there, so on a degenerate box they are exact while "adaptive" is strictly loose.
    model, shape = MODELS["linear_chain"](seed=1)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(6), dtype=D)
    with torch.no_grad():
        fx = model(x)
    pre = dr.pre_activation_bounds(model, x, x, method="ibp")
    assert bool((pre[1][1] < 0).any()), "premise: a LeakyReLU neuron with u < 0"
    for method, kw in METHODS:
        lb, ub = bounds(method, model, x, 0.0, INF, None, **kw)
        if method == "ibp" or kw.get("relu_option", "adaptive") != "adaptive":
            assert_close(lb, fx, f"{method} {kw} lower", rtol=1e-12, atol=1e-12)
            assert_close(ub, fx, f"{method} {kw} upper", rtol=1e-12, atol=1e-12)
        else:
            assert bool((lb <= fx + 1e-12).all() & (ub >= fx - 1e-12).all()), f"{method} {kw}"
            assert float((ub - lb).max()) > 1e-3, f"{method} {kw}: expected the adaptive gap"


# ----------------------------------------------------------------------------------------------
# 5. Dense matrices
# ----------------------------------------------------------------------------------------------


CONV_CASES = [
    dict(in_channels=2, out_channels=3, kernel_size=3),
    dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1),
    dict(in_channels=3, out_channels=2, kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), bias=False),
    dict(in_channels=2, out_channels=2, kernel_size=3, dilation=2, padding=2),
    dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, stride=2),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=2, padding_mode="circular"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv_dense_matrix_equals_the_conv(case):
    torch.manual_seed(0)
    conv = nn.Conv2d(**case).to(D)
    shape = (case["in_channels"], 7, 6)
    [(kind, W, b)] = dr.dense_layers(nn.Sequential(conv), shape)
    assert kind == "affine"
    x = torch.randn(5, *shape, dtype=D)
    with torch.no_grad():
        expected = conv(x).reshape(5, -1)
    assert W.shape == (expected.shape[1], x[0].numel()) and b.shape == (expected.shape[1],)
    assert_close(x.reshape(5, -1) @ W.t() + b, expected, "conv", rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(MODELS))
def test_dense_layers_reproduce_the_model(name):
    model, shape = MODELS[name](seed=0)
    x = torch.randn(4, *shape, dtype=D)
    h = x.reshape(4, -1)
    for layer in dr.dense_layers(model, shape):
        if layer[0] == "affine":
            h = h @ layer[1].t() + layer[2]
        elif layer[0] == "relu":
            h = torch.relu(h)
        else:
            h = torch.nn.functional.leaky_relu(h, layer[1])
    with torch.no_grad():
        expected = model(x).reshape(4, -1)
    assert_close(h, expected, name, rtol=1e-12, atol=1e-12)


def test_batchnorm_and_normalize_are_diagonal():
    bn = _finish(nn.Sequential(nn.BatchNorm2d(3)), 0)
    [(_, W, b)] = dr.dense_layers(bn, (3, 2, 2))
    assert torch.equal(W, torch.diag(torch.diagonal(W)))
    norm = nn.Sequential(
        dr.Normalize(torch.tensor([1.0, 2.0]).reshape(2, 1, 1), torch.tensor([2.0, 4.0]).reshape(2, 1, 1))
    )
    [(_, W, b)] = dr.dense_layers(norm, (2, 1, 2))
    assert_close(torch.diagonal(W), [0.5, 0.5, 0.25, 0.25], "1/std")
    assert_close(b, [-0.5, -0.5, -0.5, -0.5], "-mean/std")


def test_bad_inputs_are_refused():
    with pytest.raises(TypeError, match="unsupported module Tanh at index 1"):
        dr.dense_layers(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), (2,))
    with pytest.raises(ValueError, match="training mode"):
        dr.dense_layers(nn.Sequential(nn.BatchNorm1d(2)), (2,))
    model = toy_model()
    x_L, x_U = TOY_BOX
    with pytest.raises(ValueError, match="C must have shape"):
        dr.crown(model, x_L, x_U, torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="relu_option"):
        dr.crown(model, x_L, x_U, relu_option="bogus")
    with pytest.raises(ValueError, match="x_L must be <= x_U"):
        dr.ibp(model, x_U, x_L)
    with pytest.raises(ValueError, match="needs x0 and eps"):
        dr.ibp(model, None, None, norm=2)
