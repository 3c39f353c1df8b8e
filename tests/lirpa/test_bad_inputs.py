"""Bad inputs fail loudly with a clear error (issue: NaN/Inf in x or ε, ε < 0, x_L > x_U, a C of the wrong
shape, a model whose output is not a tensor, an op outside the supported list). Complements the checks in
``test_engine_soundness.py::test_bad_inputs_raise`` and
``test_engine_perturbations.py::test_validation_messages``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm, UnsupportedOperationError

X = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def bm():
    return BoundedModule(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), X)


def _xb(ptb=None, x=X):
    return (BoundedTensor(x, ptb or PerturbationLpNorm(0.1)),)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PerturbationLpNorm(math.inf), "eps must be finite"),
        (lambda: PerturbationLpNorm(math.nan, norm=2), "eps"),
        (lambda: PerturbationLpNorm(torch.tensor([0.1, math.inf])), "eps must be finite"),
        (lambda: PerturbationLpNorm(torch.tensor([0.1, math.nan])), "eps must be finite"),
        (lambda: PerturbationLpNorm(-1e-3, norm=1), "eps"),
        (lambda: PerturbationLpNorm(x_L=X.clone().fill_(math.nan), x_U=X), "x_L must be finite"),
        (lambda: PerturbationLpNorm(x_L=X - math.inf, x_U=X), "x_L must be finite"),
        (lambda: PerturbationLpNorm(x_L=X, x_U=X - 1e-6), "x_L"),
    ],
)
def test_bad_perturbations(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("norm", [math.inf, 2, 1])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_x(bm, norm, bad):
    x = X.clone()
    x[1, 2] = bad
    for method in ("IBP", "CROWN", "forward"):
        with pytest.raises(ValueError, match="x must be finite"):
            bm.compute_bounds(x=_xb(PerturbationLpNorm(0.1, norm=norm), x), method=method)


@pytest.mark.parametrize(
    "C",
    [
        torch.randn(4, 2),  # no batch dimension
        torch.randn(3, 4, 2),  # wrong batch
        torch.randn(2, 4, 5),  # wrong n_out
        torch.randn(2, 4, 2, 1),  # too many dimensions
        [[1.0, 0.0]],  # not a tensor
    ],
)
def test_C_of_the_wrong_shape(bm, C):
    for method in ("IBP", "CROWN", "CROWN-IBP", "forward", "alpha-CROWN"):
        with pytest.raises(ValueError, match=r"C must have shape \(batch=2, n_spec, n_out=2\)"):
            bm.compute_bounds(x=_xb(), C=C, method=method)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_C(bm, bad):
    C = torch.eye(2).expand(2, 2, 2).clone()
    C[1, 0, 1] = bad
    for method in ("IBP", "CROWN", "CROWN-IBP", "forward", "alpha-CROWN"):
        with pytest.raises(ValueError, match="C must be finite"):
            bm.compute_bounds(x=_xb(), C=C, method=method)


def test_input_the_model_cannot_take(bm):
    with pytest.raises(ValueError, match=r"fails on the inputs of shapes \[\(2, 5\)\].*built with inputs"):
        bm.compute_bounds(x=_xb(x=torch.randn(2, 5)), method="IBP")
    with pytest.raises(TypeError, match="must be a tensor"):
        bm.compute_bounds(x=([[0.0, 1.0, 2.0]],), method="IBP")


class DictOut(nn.Module):
    def forward(self, x):
        return {"y": x}


class ListOut(nn.Module):
    def forward(self, x):
        return [x * 2]


class FloatOut(nn.Module):
    def forward(self, x):
        return 3.0


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x), x


@pytest.mark.parametrize("model", [DictOut(), ListOut(), FloatOut(), TupleOut()])
def test_output_not_a_tensor(model):
    with pytest.raises(TypeError, match="single Tensor"):
        BoundedModule(model, X)


def test_output_independent_of_the_input():
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return self.p * 1.0

    bm = BoundedModule(Const(), X)
    with pytest.raises(ValueError, match="does not depend on a perturbed input"):
        bm.compute_bounds(x=_xb())


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=1)


class MaxPool3d(nn.Module):
    def forward(self, x):
        return F.max_pool3d(x.reshape(x.shape[0], 1, 1, 1, -1), (1, 1, 2))


class LpPool(nn.Module):
    def forward(self, x):
        return F.lp_pool1d(x.unsqueeze(1), 2, 2)


class AbsOf(nn.Module):
    def forward(self, x):
        return torch.abs(x)


@pytest.mark.parametrize(
    "model, match",
    [
        (
            nn.Sequential(nn.Linear(3, 3), nn.Softmax(1)),
            r"graph node .*no bound rule for module type Softmax",
        ),
        (nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), "LayerNorm"),
        (nn.Sequential(nn.Linear(3, 3), nn.GELU()), "GELU"),
        (Softmaxed(), r"softmax.*graph node 'softmax'"),
        (MaxPool3d(), "max_pool3d"),
        (LpPool(), "lp_pool1d"),
        (AbsOf(), "abs"),
    ],
)
def test_operator_outside_the_supported_list(model, match):
    with pytest.raises(UnsupportedOperationError, match=match) as info:
        bm = BoundedModule(model, X)
        bm.compute_bounds(x=_xb(), method="IBP")
    assert isinstance(info.value, NotImplementedError)


def test_misuse_of_the_api(bm):
    with pytest.raises(TypeError, match="nn.Module"):
        BoundedModule(lambda z: z, X)
    with pytest.raises(TypeError, match="bound_opts must be a dict"):
        BoundedModule(nn.Linear(3, 2), X, bound_opts=3)
    with pytest.raises(ValueError, match="x is None"):
        BoundedModule(nn.Linear(3, 2), X).compute_bounds()
    with pytest.raises(ValueError, match="method=None needs IBP=True"):
        bm.compute_bounds(x=_xb(), method=None)
    with pytest.raises(ValueError, match="bound_lower and bound_upper"):
        bm.compute_bounds(x=_xb(), bound_lower=False, bound_upper=False)
    with pytest.raises(KeyError, match="final_node_name 'nope'"):
        bm.compute_bounds(x=_xb(), final_node_name="nope")
    with pytest.raises(TypeError, match="PerturbationLpNorm"):
        BoundedTensor(X, ptb="0.1")
