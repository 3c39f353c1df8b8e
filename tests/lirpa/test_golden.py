"""Golden files: bounds of fixed models, to catch unintended numerical changes.

Each ``golden/<name>.pt`` holds a model's ``state_dict``, its input, ``eps`` and, for ℓ∞ and ℓ2 balls,
the bounds of IBP, CROWN-IBP, CROWN, same-slope CROWN and α-CROWN (and IBP / CROWN with a margin spec
``C``) computed by this engine in float32. The test recomputes them and compares at ``rtol=1e-5,
atol=1e-6`` (auto_LiRPA's ``TestCase.check`` tolerance).

``pytest tests/lirpa/test_golden.py --generate`` rewrites the files; before writing, every bound is
checked sound (:func:`certcore.testing.check_bounds_sound`), so a golden file never freezes an unsound
result. Regenerate only after a change whose numerical effect is understood.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certcore.bounds import margin_spec
from certcore.testing import check_bounds_sound, randomize_batchnorm
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm

GOLDEN = Path(__file__).parent / "golden"
EPS = 0.01
NORMS = {"linf": math.inf, "l2": 2}
METHODS = {
    "IBP": ("IBP", {}),
    "CROWN-IBP": ("CROWN-IBP", {}),
    "CROWN": ("CROWN", {}),
    "CROWN-same-slope": ("CROWN", {"activation_bound_option": "same-slope"}),
    "alpha-CROWN": ("alpha-CROWN", {"optimize_bound_args": {"iteration": 10, "lr_alpha": 0.1}}),
}
RTOL, ATOL = 1e-5, 1e-6


class Cnn4LayerTest(nn.Module):
    """Like auto_LiRPA's ``cnn_4layer_test``: BN on the input, a strided conv, a strided-conv shortcut
    added in place, a second conv and a linear head (here on 3×8×8 inputs)."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.inplace = inplace  # False: the same function without ``+=`` (for PGD's autograd)
        self.bn = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 3, 4, stride=2, padding=1)
        self.shortcut = nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 4, stride=2, padding=1)
        self.fc1 = nn.Linear(3 * 2 * 2, 10)

    def forward(self, x):
        x_ = x
        x = F.relu(self.conv1(self.bn(x)))
        if self.inplace:
            x += self.shortcut(x_)
        else:
            x = x + self.shortcut(x_)
        x = F.relu(self.conv2(x))
        x = x.view(x.size(0), -1)
        return self.fc1(x)


class CnnPools(nn.Module):
    """Input normalisation, conv + ReLU, an overlapping max pool, a LeakyReLU conv, average pooling,
    concatenation with a sliced branch, and a Tanh MLP head."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5]).reshape(1, 2, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.3]).reshape(1, 2, 1, 1))
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(3 * 2 * 2 + 2 * 2 * 2, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        x = (x - self.mean) / self.std
        h = self.pool(F.relu(self.conv1(x)))
        a = F.leaky_relu(self.conv2(h), 0.1)
        a = F.avg_pool2d(a, 2)
        b = F.max_pool2d(h[:, 1:3], 2)
        z = torch.cat([a.flatten(1), F.avg_pool2d(b, 2).flatten(1)], dim=1)
        return self.fc2(torch.tanh(self.fc1(z)))


MODELS = {"cnn_4layer_test": (Cnn4LayerTest, (3, 8, 8)), "cnn_pools": (CnnPools, (2, 8, 8))}


def _fresh(name: str) -> tuple[nn.Module, torch.Tensor]:
    builder, shape = MODELS[name]
    torch.manual_seed(0)
    model = builder()
    randomize_batchnorm(model, torch.Generator().manual_seed(0))
    model.eval()
    return model, torch.rand(2, *shape)


def _compute(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    y = model(x).argmax(1)
    C = margin_spec(y, model(x).shape[1], dtype=x.dtype)
    for norm_name, norm in NORMS.items():
        xb = BoundedTensor(x, PerturbationLpNorm(EPS, norm=norm))
        for key, (method, opts) in METHODS.items():
            bm = BoundedModule(model, x, bound_opts=opts)
            lb, ub = bm.compute_bounds(x=(xb,), method=method)
            out[f"{norm_name}_{key}_lb"], out[f"{norm_name}_{key}_ub"] = lb.detach(), ub.detach()
            if key in ("IBP", "CROWN"):
                lb, _ = bm.compute_bounds(x=(xb,), C=C, method=method, bound_upper=False)
                out[f"{norm_name}_{key}_C_lb"] = lb.detach()
    out["C"] = C
    return out


def _assert_sound(model: nn.Module, x: torch.Tensor, bounds: dict[str, torch.Tensor]) -> None:
    for norm_name, norm in NORMS.items():
        for key in METHODS:
            lb, ub = bounds[f"{norm_name}_{key}_lb"], bounds[f"{norm_name}_{key}_ub"]
            check_bounds_sound(
                model, x, EPS, lambda box, lb=lb, ub=ub: (lb, ub), norm="inf" if norm == math.inf else "2"
            )
        for key in ("IBP", "CROWN"):
            C, lb = bounds["C"], bounds[f"{norm_name}_{key}_C_lb"]

            def margins(z, C=C):
                out = model(z)
                k = out.shape[0] // C.shape[0]
                return torch.einsum("bso,bo->bs", C.repeat(k, 1, 1), out)

            check_bounds_sound(
                margins,
                x,
                EPS,
                lambda box, lb=lb: (lb, torch.full_like(lb, math.inf)),
                norm="inf" if norm == math.inf else "2",
            )


def _pack(tensors: dict[str, torch.Tensor]) -> dict:
    """One flat tensor plus names and shapes (a few KB instead of one zip record per tensor)."""
    keys = sorted(tensors)
    flat = torch.cat([tensors[k].detach().reshape(-1).to(torch.float64) for k in keys])
    return {"keys": keys, "shapes": [list(tensors[k].shape) for k in keys], "flat": flat.to(torch.float32)}


def _unpack(packed: dict) -> dict[str, torch.Tensor]:
    sizes = [math.prod(shape) for shape in packed["shapes"]]
    parts = packed["flat"].split(sizes)
    return {k: p.reshape(shape) for k, p, shape in zip(packed["keys"], parts, packed["shapes"], strict=True)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_golden_bounds(name, request):
    path = GOLDEN / f"{name}.pt"
    if request.config.getoption("--generate", default=False):
        model, x = _fresh(name)
        bounds = _compute(model, x)
        twin = MODELS[name][0](**({"inplace": False} if name == "cnn_4layer_test" else {}))
        twin.load_state_dict(model.state_dict())
        _assert_sound(twin.eval(), x, bounds)
        GOLDEN.mkdir(exist_ok=True)
        state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        torch.save({"model": _pack(state), "input": x, "eps": EPS, "bounds": _pack(bounds)}, path)
    if not path.exists():
        pytest.fail(f"{path} is missing: run pytest tests/lirpa/test_golden.py --generate")
    data = torch.load(path, weights_only=True)
    model = MODELS[name][0]()
    missing, unexpected = model.load_state_dict(_unpack(data["model"]), strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    model.eval()
    x = data["input"]
    assert data["eps"] == EPS
    bounds = _compute(model, x)
    golden = _unpack(data["bounds"])
    assert set(bounds) == set(golden)
    for key, ref in golden.items():
        torch.testing.assert_close(
            bounds[key], ref, rtol=RTOL, atol=ATOL, msg=lambda m, key=key: f"{key}: {m}"
        )
