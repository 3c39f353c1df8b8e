"""Margin specifications: C layout, C merged into the last layer (tighter, still sound), certified()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from certcore.bounds import (
    Interval,
    certified,
    ibp,
    ibp_margin_lower,
    ibp_spec_bounds,
    interval_spec,
    margin_spec,
)
from certcore.testing import check_bounds_sound, check_certified_robust, freeze_batch_stats, make_zoo_model

DT = torch.float64


def test_margin_spec_layout():
    C = margin_spec(torch.tensor([0, 2]), 3, dtype=DT)
    assert C.shape == (2, 2, 3) and C.dtype == DT
    expected = torch.tensor([[[1, -1, 0], [1, 0, -1]], [[-1, 0, 1], [0, -1, 1]]], dtype=DT)
    assert torch.equal(C, expected)
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]], dtype=DT)
    margins = torch.einsum("bsk,bk->bs", C, z)
    assert torch.equal(margins, torch.tensor([[2.0, 1.0], [4.0, -1.0]], dtype=DT))


@pytest.mark.parametrize(
    ("y", "k", "error", "match"),
    [
        (torch.tensor([0.0, 1.0]), 3, TypeError, "integer class indices"),
        (torch.tensor([[0, 1]]), 3, ValueError, "1-D"),
        (torch.tensor([0, 3]), 3, ValueError, r"labels must lie in \[0, 3\)"),
        (torch.tensor([-1, 0]), 3, ValueError, "labels must lie"),
        (torch.tensor([0, 1]), 1, ValueError, "num_classes must be an int >= 2"),
        ([0, 1], 3, TypeError, "torch.Tensor"),
    ],
)
def test_margin_spec_bad_labels(y, k, error, match):
    with pytest.raises(error, match=match):
        margin_spec(y, k)


@pytest.mark.parametrize("name", ["mlp-relu", "cnn-stride-pad", "resnet"])
def test_merged_margin_bound_is_tighter_than_naive_and_sound(name):
    model, shape = make_zoo_model(name, seed=11)
    gen = torch.Generator().manual_seed(12)
    x = torch.rand(6, *shape, dtype=DT, generator=gen)
    y = torch.randint(0, 3, (6,), generator=gen)
    box = Interval.from_eps(x, 0.03, 0.0, 1.0)
    merged = ibp_margin_lower(model, box, y)
    naive = interval_spec(ibp(model, box), margin_spec(y, 3, dtype=DT)).lower
    assert merged.shape == (6, 2)
    assert (merged >= naive - 1e-12).all()
    assert (merged > naive + 1e-6).any()
    C = margin_spec(y, 3, dtype=DT)
    spec_bounds = ibp_spec_bounds(model, box, C)
    assert torch.equal(spec_bounds.lower, merged)

    def margins(inp):
        rows = inp.shape[0] // 6
        return torch.einsum("bsk,bk->bs", C.repeat(rows, 1, 1), model(inp))

    check_bounds_sound(
        margins,
        x,
        0.03,
        lambda b: ibp_spec_bounds(model, b, C),
        n_samples=32,
        pgd_steps=10,
        data_min=0.0,
        data_max=1.0,
    )


def test_merged_margin_train_mode_batchnorm_and_return_clean():
    model, shape = make_zoo_model("mlp-bn", seed=13)
    model.train()
    x = torch.rand(8, *shape, dtype=DT)
    y = torch.randint(0, 3, (8,))
    box = Interval.from_eps(x, 0.02, 0.0, 1.0)
    frozen = freeze_batch_stats(model, x)
    lb, logits = ibp_margin_lower(model, box, y, clean=x, return_clean=True)
    torch.testing.assert_close(logits, frozen(x))
    naive = interval_spec(ibp(frozen, box), margin_spec(y, 3, dtype=DT)).lower
    assert (lb >= naive - 1e-12).all()
    C = margin_spec(y, 3, dtype=DT)
    true_margin = torch.einsum("bsk,bk->bs", C, logits)
    assert (lb <= true_margin + 1e-12).all()


def test_model_not_ending_in_linear_falls_back_soundly():
    torch.manual_seed(14)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.Tanh()).to(DT)
    x = torch.rand(5, 4, dtype=DT)
    y = torch.randint(0, 3, (5,))
    box = Interval.from_eps(x, 0.05)
    lb = ibp_margin_lower(model, box, y)
    naive = interval_spec(ibp(model, box), margin_spec(y, 3, dtype=DT)).lower
    assert torch.equal(lb, naive)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ibp_margin_lower(model, box, torch.full((5,), 3))


def test_num_classes_and_label_checks():
    model = nn.Sequential(nn.Linear(4, 3)).to(DT)
    box = Interval.point(torch.rand(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="y has 3 labels but the batch has 2 samples"):
        ibp_margin_lower(model, box, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels must lie"):
        ibp_margin_lower(model, box, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"does not fit the last Linear \(out_features=3\)"):
        ibp_margin_lower(model, box, torch.tensor([0, 1]), num_classes=4)
    with pytest.raises(TypeError, match="box must be"):
        ibp_margin_lower(model, torch.zeros(2, 4), torch.tensor([0, 1]))
    lb = ibp_margin_lower(model, box, torch.tensor([0, 1]))
    logits = model(box.lower)
    torch.testing.assert_close(lb[0], logits[0, 0] - logits[0, 1:])


def test_spec_with_shared_2d_C():
    model = nn.Sequential(nn.Linear(4, 3)).to(DT)
    box = Interval.from_eps(torch.rand(2, 4, dtype=DT), 0.1)
    C = torch.tensor([[1.0, -1.0, 0.0]], dtype=DT)
    out = ibp_spec_bounds(model, box, C)
    assert out.shape == (2, 1)
    with pytest.raises(ValueError, match="does not fit the last Linear"):
        ibp_spec_bounds(model, box, torch.ones(1, 4, dtype=DT))


def test_certified_semantics():
    lb = torch.tensor([[0.1, 0.2], [0.1, 0.0], [-1.0, 2.0]])
    assert certified(lb).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="1-D shape"):
        certified(torch.tensor([0.1, 0.2]))


def test_certified_points_survive_pgd():
    model, shape = make_zoo_model("cnn-stride-pad", seed=15)
    gen = torch.Generator().manual_seed(16)
    x = torch.rand(16, *shape, dtype=DT, generator=gen)
    y = model(x).argmax(1)
    eps = 0.004
    mask = certified(ibp_margin_lower(model, Interval.from_eps(x, eps, 0.0, 1.0), y))
    assert 0 < int(mask.sum()) < 16  # a meaningful mix
    report = check_certified_robust(
        model, x, y, eps, mask, pgd_steps=20, restarts=1, data_min=0.0, data_max=1.0
    )
    assert report.ok and report.n_certified == int(mask.sum())
