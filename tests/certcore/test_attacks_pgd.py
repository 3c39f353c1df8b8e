"""certcore.attacks: PGD finds known answers, respects the ball and the data range, keeps the worst."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certcore.attacks import margin_loss, pgd, pgd_bound_attack

DT = torch.float64


def linear_model(weight, bias=None):
    weight = torch.as_tensor(weight, dtype=DT)
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(DT)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(torch.as_tensor(bias, dtype=DT))
    return lin


def test_1d_toy_finds_the_known_adversarial_point():
    model = linear_model([[1.0], [-1.0]])  # class 0 iff x > 0
    x = torch.tensor([[0.3], [0.7]], dtype=DT)
    y = torch.tensor([0, 0])
    x_adv = pgd(model, x, y, 0.5, steps=10)
    # the loss grows as x decreases: the answer is the left end of the ball
    torch.testing.assert_close(x_adv, torch.tensor([[-0.2], [0.2]], dtype=DT))
    assert model(x_adv).argmax(1).tolist() == [1, 0]


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_2d_linear_toy_known_optimum(norm, loss):
    w = torch.tensor([[2.0, -1.0], [0.0, 1.0]], dtype=DT)
    model = linear_model(w)
    x = torch.tensor([[0.5, 0.2], [0.4, 0.6]], dtype=DT)
    y = torch.tensor([0, 1])
    eps = 0.1
    d = (w[0] - w[1]).expand(2, 2) * torch.where(y == 0, 1.0, -1.0).to(DT).unsqueeze(
        1
    )  # gradient of the margin
    if norm == "inf":
        expected = x - eps * d.sign()
    else:
        expected = x - eps * d / d.norm(dim=1, keepdim=True)
    x_adv = pgd(model, x, y, eps, norm=norm, steps=50, random_start=False, loss=loss)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-9)
    x_adv = pgd(
        model,
        x,
        y,
        eps,
        norm=norm,
        steps=100,
        random_start=True,
        loss=loss,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_stays_in_ball_and_data_range(norm):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)).to(DT)
    x = torch.rand(8, 3, 2, 2, dtype=DT)
    x[0] = 1.0
    x[1] = 0.0
    y = torch.randint(0, 4, (8,))
    eps = 0.3 if norm == "inf" else 0.6
    x_adv = pgd(model, x, y, eps, norm=norm, steps=15, restarts=2, data_min=0.0, data_max=1.0)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    if norm == "inf":
        assert delta.abs().max() <= eps + 1e-12
    else:
        assert (delta.norm(dim=1) <= eps * (1 + 1e-9)).all()
    loss0 = F.cross_entropy(model(x), y, reduction="none")
    loss1 = F.cross_entropy(model(x_adv), y, reduction="none")
    assert (loss1 >= loss0 - 1e-12).all() and (loss1 > loss0).any()


def test_per_sample_eps_and_per_channel_range():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).to(DT)
    x = torch.rand(3, 2, 2, 2, dtype=DT) * 0.5
    eps = torch.tensor([0.0, 0.05, 0.2], dtype=DT).view(3, 1, 1, 1)
    hi = torch.tensor([0.5, 1.0], dtype=DT).view(2, 1, 1)
    x_adv = pgd(model, x, torch.tensor([0, 1, 2]), eps, steps=10, data_min=0.0, data_max=hi)
    dist = (x_adv - x).flatten(1).abs().amax(1)
    assert dist[0] == 0 and dist[1] <= 0.05 + 1e-12 and dist[2] <= 0.2 + 1e-12
    assert (x_adv[:, 0] <= 0.5).all()


def test_restarts_keep_the_worst():
    # loss(x) = -(x - 0.8)^2 on [-1, 1] from x0 = 0: a start right of 0 climbs to 0.8 (loss 0);
    # a start left of 0 ... also climbs right. Use a double well instead: two local maxima.
    def double_well(x):
        t = x[:, 0]
        score = torch.where(t < 0, 1.0 - (t + 0.8) ** 2, 3.0 - (t - 0.8) ** 2)  # global max at +0.8
        return torch.stack([torch.zeros_like(score), score], dim=1)

    x = torch.zeros(1, 1, dtype=DT)
    y = torch.tensor([0])
    starts = iter([-0.5, 0.5, -0.5])

    def scripted(x, eps):
        return torch.full_like(x, next(starts))

    def loss(logits, labels):
        return logits[:, 1]

    x_adv = pgd(
        double_well, x, y, 1.0, steps=40, step_size=0.01, restarts=3, random_start=scripted, loss=loss
    )
    assert abs(float(x_adv) - 0.8) < 0.02
    # with only the left start the attack stays in the local maximum
    starts = iter([-0.5])
    x_left = pgd(
        double_well, x, y, 1.0, steps=40, step_size=0.01, restarts=1, random_start=scripted, loss=loss
    )
    assert abs(float(x_left) + 0.8) < 0.02


def test_misclassified_beats_higher_loss():
    # restart 1 ends misclassified with a low loss; restart 2 ends correctly classified with a high loss
    def model(x):
        t = x[:, 0]
        return torch.stack([t, -t], dim=1)  # class 0 iff x > 0

    def loss(logits, labels):  # highest at x = +1 (correct class), lower at x = -1
        t = logits[:, 0]
        return 10 * t

    x = torch.tensor([[0.1]], dtype=DT)
    starts = iter([-1.0, 0.5])
    x_adv = pgd(
        model,
        x,
        torch.tensor([0]),
        1.0,
        steps=0,
        restarts=2,
        loss=loss,
        random_start=lambda x, eps: torch.full_like(x, next(starts)),
    )
    assert float(x_adv) == pytest.approx(-0.9)
    assert model(x_adv).argmax(1).item() == 1


def test_targeted_reaches_the_target():
    model = linear_model([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    x = torch.tensor([[0.3, 0.1]], dtype=DT)  # class 0
    target = torch.tensor([2])
    for loss in ("ce", "margin"):
        x_adv = pgd(model, x, target, 0.5, steps=20, loss=loss, targeted=True)
        assert model(x_adv).argmax(1).item() == 2
        torch.testing.assert_close(x_adv, torch.tensor([[-0.2, -0.4]], dtype=DT))


def test_margin_loss_values():
    logits = torch.tensor([[3.0, 1.0, 2.0]])
    assert margin_loss(logits, torch.tensor([0])).item() == -1.0
    assert margin_loss(logits, torch.tensor([1])).item() == 2.0
    assert margin_loss(logits, torch.tensor([2]), targeted=True).item() == -1.0


def test_no_side_effects_on_the_model():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).to(DT).train()
    buffers = [b.clone() for b in model.buffers()]
    x = torch.rand(5, 4, dtype=DT)
    pgd(model, x, torch.randint(0, 3, (5,)), 0.1, steps=5)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    model.eval()
    with torch.no_grad():  # works inside no_grad too
        pgd(model, x, torch.randint(0, 3, (5,)), 0.1, steps=5)
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_reproducible_with_a_generator_and_zero_eps():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)
    x = torch.rand(6, 4, dtype=DT)
    y = torch.randint(0, 3, (6,))
    a = pgd(model, x, y, 0.2, steps=5, generator=torch.Generator().manual_seed(7))
    b = pgd(model, x, y, 0.2, steps=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(pgd(model, x, y, 0.0, steps=5), x)


def test_bound_attack_pushes_an_output_up_and_down():
    model = linear_model([[1.0, -2.0, 0.5], [0.0, 1.0, 0.0]])
    x = torch.full((2, 3), 0.5, dtype=DT)
    up = pgd_bound_attack(model, x, 0.1, 0, steps=10)
    down = pgd_bound_attack(model, x, 0.1, 0, maximize=False, steps=10)
    torch.testing.assert_close(up, x + 0.1 * torch.tensor([1.0, -1.0, 1.0], dtype=DT))
    torch.testing.assert_close(down, x - 0.1 * torch.tensor([1.0, -1.0, 1.0], dtype=DT))
    per_sample = pgd_bound_attack(model, x, 0.1, torch.tensor([0, 1]), steps=10)
    torch.testing.assert_close(per_sample[0], up[0])
    assert float(per_sample[1, 1]) == pytest.approx(0.6)  # output 1 depends on x[1] only
    l2 = pgd_bound_attack(model, x, 0.1, lambda out: out.sum(1), norm="2", steps=30, random_start=False)
    direction = torch.tensor([1.0, -1.0, 0.5], dtype=DT)
    torch.testing.assert_close(l2[0], x[0] + 0.1 * direction / direction.norm(), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": -0.1}, ValueError, "eps must be >= 0"),
        ({"eps": float("nan")}, ValueError, "eps must not be NaN"),
        ({"norm": "1"}, ValueError, "norm must be"),
        ({"steps": -1}, ValueError, "steps must be an int >= 0"),
        ({"restarts": 0}, ValueError, "restarts must be an int >= 1"),
        ({"y": torch.tensor([0.0, 1.0])}, TypeError, "y must be an integer tensor"),
        ({"y": torch.tensor([0, 1, 2])}, ValueError, r"y must have shape \(2,\)"),
        ({"y": torch.tensor([0, 7])}, ValueError, r"labels must lie in \[0, 3\)"),
        ({"loss": "hinge"}, ValueError, "loss must be 'ce', 'margin' or a callable"),
        ({"x": torch.tensor([[0.0, float("nan")], [0.0, 0.0]], dtype=DT)}, ValueError, "x must be finite"),
        ({"x": torch.tensor([[0.0, float("inf")], [0.0, 0.0]], dtype=DT)}, ValueError, "x must be finite"),
        ({"x": torch.zeros(2, 2, dtype=torch.long)}, TypeError, "floating dtype"),
        ({"data_min": 0.5}, ValueError, "below data_min"),
        ({"eps": torch.ones(2, 2, dtype=DT), "norm": "2"}, ValueError, "scalar or per-sample"),
    ],
)
def test_bad_inputs_raise(kwargs, error, match):
    model = linear_model([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    args = {"x": torch.zeros(2, 2, dtype=DT), "y": torch.tensor([0, 1]), "eps": 0.1}
    args.update(kwargs)
    x, y, eps = args.pop("x"), args.pop("y"), args.pop("eps")
    with pytest.raises(error, match=match):
        pgd(model, x, y, eps, steps=args.pop("steps", 2), **args)


def test_bound_attack_bad_objective():
    model = linear_model([[1.0, 0.0]])
    x = torch.zeros(2, 2, dtype=DT)
    with pytest.raises(ValueError, match="output coordinate out of range"):
        pgd_bound_attack(model, x, 0.1, 5, steps=1)
    with pytest.raises(ValueError, match=r"\(2,\) integer tensor"):
        pgd_bound_attack(model, x, 0.1, torch.tensor([0.0, 1.0]), steps=1)
    with pytest.raises(ValueError, match="one value per sample"):
        pgd_bound_attack(model, x, 0.1, lambda out: out, steps=1)
