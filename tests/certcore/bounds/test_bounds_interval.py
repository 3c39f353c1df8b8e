"""certcore.bounds.Interval: validation, constructors, views and bad inputs."""

from __future__ import annotations

import pytest
import torch

from certcore.bounds import Interval


def test_valid_interval_and_views():
    lo = torch.tensor([[0.0, -1.0], [2.0, 3.0]])
    hi = torch.tensor([[1.0, 1.0], [2.0, 5.0]])
    box = Interval(lo, hi)
    assert torch.equal(box.center, torch.tensor([[0.5, 0.0], [2.0, 4.0]]))
    assert torch.equal(box.radius, torch.tensor([[0.5, 1.0], [0.0, 1.0]]))
    assert torch.equal(box.width, 2 * box.radius)
    assert box.shape == (2, 2) and box.dtype == torch.float32 and box.device.type == "cpu"
    lower, upper = box
    assert lower is lo and upper is hi
    assert torch.equal(box[1].lower, lo[1])
    assert box.contains(torch.tensor([[0.5, 0.0], [2.0, 5.0]])).all()
    assert not box.contains(torch.tensor([[1.5, 0.0], [2.0, 5.0]])).all()
    assert box.contains(torch.tensor([[1.0 + 1e-3, 0.0], [2.0, 5.0]]), atol=1e-2).all()
    assert "Interval(shape=(2, 2)" in repr(box)


def test_infinite_bounds_are_allowed():
    box = Interval(torch.tensor([-float("inf"), 0.0]), torch.tensor([0.0, float("inf")]))
    assert torch.isinf(box.width).all()


def test_frozen():
    box = Interval.point(torch.zeros(2))
    with pytest.raises(AttributeError):
        box.lower = torch.ones(2)


@pytest.mark.parametrize(
    ("lower", "upper", "error", "match"),
    [
        (torch.zeros(2), torch.zeros(3), ValueError, "same shape"),
        (torch.zeros(2), torch.zeros(2, dtype=torch.float64), TypeError, "same dtype"),
        (torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), TypeError, "floating dtype"),
        ([0.0, 1.0], torch.zeros(2), TypeError, "torch.Tensor"),
        (torch.tensor([0.0, float("nan")]), torch.ones(2), ValueError, "NaN"),
        (
            torch.tensor([0.0, 2.0]),
            torch.ones(2),
            ValueError,
            r"lower > upper at 1 entries \(first at index \(1,\)",
        ),
    ],
)
def test_bad_intervals_raise(lower, upper, error, match):
    with pytest.raises(error, match=match):
        Interval(lower, upper)


def test_check_false_skips_validation():
    box = Interval(torch.ones(2), torch.zeros(2), check=False)
    assert torch.equal(box.lower, torch.ones(2))


@pytest.mark.cuda
def test_device_mismatch_raises():
    with pytest.raises(ValueError, match="same device"):
        Interval(torch.zeros(2), torch.ones(2, device="cuda"))


def test_from_eps_box_and_clipping():
    x = torch.tensor([[0.0, 0.5, 0.98]], dtype=torch.float64)
    box = Interval.from_eps(x, 0.1)
    assert torch.allclose(box.lower, x - 0.1) and torch.allclose(box.upper, x + 0.1)
    box = Interval.from_eps(x, 0.1, data_min=0.0, data_max=1.0)
    assert torch.allclose(box.lower, torch.tensor([[0.0, 0.4, 0.88]], dtype=torch.float64))
    assert torch.allclose(box.upper, torch.tensor([[0.1, 0.6, 1.0]], dtype=torch.float64))
    assert box.dtype == torch.float64


def test_from_eps_tensor_eps_and_per_channel_range():
    x = torch.full((2, 3, 2, 2), 0.5)
    eps = torch.tensor([0.1, 0.2]).view(2, 1, 1, 1)  # per sample
    box = Interval.from_eps(x, eps)
    assert torch.allclose(box.radius[0], torch.full((3, 2, 2), 0.1))
    assert torch.allclose(box.radius[1], torch.full((3, 2, 2), 0.2))
    eps_c = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)  # per channel (e.g. eps / std)
    hi = torch.tensor([0.55, 1.0, 1.0]).view(3, 1, 1)
    box = Interval.from_eps(x, eps_c, data_min=0.0, data_max=hi)
    assert torch.allclose(box.upper[:, 0], torch.full((2, 2, 2), 0.55))
    assert torch.allclose(box.lower[:, 2], torch.full((2, 2, 2), 0.2))


def test_from_eps_l2_is_the_bounding_box():
    x = torch.rand(3, 4)
    assert torch.equal(Interval.from_eps(x, 0.3, norm=2).lower, Interval.from_eps(x, 0.3).lower)
    assert torch.equal(
        Interval.from_eps(x, 0.3, norm="2").upper, Interval.from_eps(x, 0.3, norm=float("inf")).upper
    )


def test_from_eps_zero_and_point():
    x = torch.rand(2, 3)
    box = Interval.from_eps(x, 0.0)
    assert torch.equal(box.lower, x) and torch.equal(box.upper, x)
    assert torch.equal(Interval.point(x).radius, torch.zeros_like(x))


def test_from_eps_clamps_x_outside_by_a_few_ulps():
    x = torch.tensor([[-1e-8, 1.0 + 1e-7]])
    box = Interval.from_eps(x, 0.0, data_min=0.0, data_max=1.0)
    assert torch.equal(box.lower, torch.tensor([[0.0, 1.0]]))
    assert torch.equal(box.upper, torch.tensor([[0.0, 1.0]]))


def test_from_eps_is_differentiable_in_x_and_eps():
    x = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    eps = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    box = Interval.from_eps(x, eps)
    (box.upper.sum() - box.lower.sum()).backward()
    assert torch.allclose(eps.grad, torch.tensor(12.0, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": -0.1}, ValueError, "eps must be >= 0"),
        ({"eps": float("nan")}, ValueError, "eps must not be NaN"),
        ({"eps": float("inf")}, ValueError, "eps must be finite"),
        ({"eps": torch.tensor([0.1, -0.1, 0.1])}, ValueError, "eps must be >= 0"),
        ({"eps": torch.ones(4)}, ValueError, "must broadcast to the input shape"),
        ({"eps": "0.1"}, TypeError, "eps must be a float or a tensor"),
        ({"eps": 0.1, "norm": 1}, ValueError, "norm must be"),
        ({"eps": 0.1, "data_min": 0.0, "data_max": 0.1}, ValueError, "above data_max"),
        ({"eps": 0.1, "data_min": 0.9}, ValueError, "below data_min"),
        ({"eps": 0.1, "data_min": 1.0, "data_max": 0.0}, ValueError, "data_min must be <= data_max"),
        ({"eps": 0.1, "data_min": float("nan")}, ValueError, "data_min must not be NaN"),
    ],
)
def test_from_eps_bad_arguments(kwargs, error, match):
    x = torch.tensor([[0.2, 0.5, 0.8]])
    with pytest.raises(error, match=match):
        Interval.from_eps(x, **kwargs)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.tensor([[0.0, float("nan")]]), ValueError, "1 NaN"),
        (torch.tensor([[0.0, float("inf")]]), ValueError, "1 infinite"),
        (torch.tensor([[0, 1]]), TypeError, "floating dtype"),
        ([[0.0, 1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_from_eps_bad_x(x, error, match):
    with pytest.raises(error, match=match):
        Interval.from_eps(x, 0.1)


def test_clip_and_intersect():
    box = Interval(torch.tensor([-1.0, 0.2]), torch.tensor([0.5, 2.0]))
    clipped = box.clip(0.0, 1.0)
    assert torch.equal(clipped.lower, torch.tensor([0.0, 0.2]))
    assert torch.equal(clipped.upper, torch.tensor([0.5, 1.0]))
    both = box.intersect(Interval(torch.tensor([0.0, 0.0]), torch.tensor([0.1, 0.3])))
    assert torch.equal(both.upper, torch.tensor([0.1, 0.3]))
    with pytest.raises(ValueError, match="lower > upper"):
        box.clip(data_min=3.0)
