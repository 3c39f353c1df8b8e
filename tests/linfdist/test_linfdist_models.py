"""MLPModel / HybridModel: structure, parameter counts, the worst-case margins, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from certcore.bounds import Interval
from linfdist import HybridConfig, HybridModel, MLPConfig, MLPModel, at_p, build_model, set_p


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("config", "shape", "expected"),
    [
        (MLPConfig(depth=5, width=5120), (1, 28, 28), 82_708_491),  # v2 log.txt, MNIST
        (MLPConfig(depth=6, width=5120), (3, 32, 32), 120_637_451),  # v2 log.txt, CIFAR-10
    ],
)
def test_parameter_counts_match_the_logs(config, shape, expected) -> None:
    with torch.device("meta"):
        model = build_model(config, shape, 10)
    assert n_params(model) == expected


def test_structure() -> None:
    m = MLPModel(MLPConfig(depth=4, width=16), (1, 4, 4))
    assert len(m.layers) == 4
    assert [layer.mean_shift is not None for layer in m.layers] == [True, True, True, False]
    assert [layer.bias is not None for layer in m.layers] == [False, False, False, True]
    assert isinstance(m.scalar, torch.nn.Parameter)
    assert "scalar" not in dict(
        MLPModel(MLPConfig(depth=3, width=8, scalar=False), (1, 4, 4)).named_parameters()
    )
    h = HybridModel(HybridConfig(depth=5, width=16, hidden=8), (1, 4, 4))
    assert len(h.layers) == 3  # depth - 2 distance layers, then the 2-layer head


def test_mlp_worst_is_the_lipschitz_margin() -> None:
    torch.manual_seed(0)
    m = MLPModel(MLPConfig(depth=3, width=16), (1, 4, 4))
    with torch.no_grad():
        m.scalar.fill_(3.0)
    x, y = torch.randn(6, 1, 4, 4), torch.randint(0, 10, (6,))
    logits, worst = m(x, targets=y, eps=0.2)
    z = logits / 3.0
    expected = (z - z.gather(1, y.view(-1, 1))) / 0.4 + 1
    expected = expected.scatter(1, y.view(-1, 1), 0.0)
    torch.testing.assert_close(worst, expected)
    torch.testing.assert_close(logits, m(x))  # same batch statistics => same logits (train mode)
    with pytest.raises(ValueError, match="eps must be > 0"):
        m(x, targets=y, eps=0.0)


def test_hybrid_worst_is_the_ibp_margin() -> None:
    torch.manual_seed(1)
    h = HybridModel(HybridConfig(depth=4, width=16, hidden=8), (1, 4, 4))
    x, y = torch.randn(6, 1, 4, 4), torch.randint(0, 10, (6,))
    logits, worst = h(x, targets=y, eps=0.0)  # zero-width box: the bound is the margin itself
    torch.testing.assert_close(worst, logits - logits.gather(1, y.view(-1, 1)), atol=1e-5, rtol=0)
    _, worst_eps = h(x, targets=y, eps=0.1)
    assert bool((worst_eps >= worst - 1e-6).all())
    assert bool((worst_eps.gather(1, y.view(-1, 1)) == 0).all())


@pytest.mark.parametrize("kind", ["mlp", "hybrid"])
def test_interval_forward_contains_logits(kind) -> None:
    torch.manual_seed(2)
    cfg = MLPConfig(depth=4, width=16) if kind == "mlp" else HybridConfig(depth=4, width=16, hidden=8)
    model = build_model(cfg, (1, 4, 4))
    model(torch.randn(32, 1, 4, 4))  # fill the running means
    model.eval()
    set_p(model, math.inf)
    x = torch.rand(3, 1, 4, 4)
    box = Interval.from_eps(x, 0.05, data_min=0.0, data_max=1.0)
    with torch.no_grad():
        out = model.interval_forward(box)
        for _ in range(30):
            s = torch.clamp(x + (torch.rand_like(x) * 2 - 1) * 0.05, 0, 1)
            assert bool(out.contains(model(s), atol=1e-5).all())


def test_bad_input_shape_is_a_clear_error() -> None:
    m = MLPModel(MLPConfig(depth=3, width=8), (1, 28, 28))
    with pytest.raises(ValueError, match=r"built for inputs of shape \(B, 1, 28, 28\); got \(2, 3, 32, 32\)"):
        m(torch.randn(2, 3, 32, 32))


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match="depth >= 2"):
        MLPConfig(depth=1)
    with pytest.raises(ValueError, match="depth >= 3"):
        HybridConfig(depth=2)
    with pytest.raises(TypeError, match="unknown model config"):
        build_model(object(), (1, 2, 2))  # type: ignore[arg-type]


def test_at_p_restores() -> None:
    m = MLPModel(MLPConfig(depth=3, width=8), (1, 2, 2))
    set_p(m, 8.0)
    with at_p(m, math.inf):
        assert all(math.isinf(layer.p) for layer in m.layers)
    assert all(layer.p == 8.0 for layer in m.layers)
