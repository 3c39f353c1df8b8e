"""ibp(): soundness on random models (via the kit), containers, extension hooks, errors, training."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certcore.bounds import (
    Interval,
    Residual,
    UnsupportedModuleError,
    ibp,
    ibp_margin_lower,
    interval_monotone,
    register_rule,
)
from certcore.testing import ZOO, check_bounds_sound, freeze_batch_stats, make_zoo_model

DTYPES = [torch.float64, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_ibp_sound_on_zoo_eval_mode(name, dtype):
    model, shape = make_zoo_model(name, dtype=dtype, seed=1)
    x = torch.rand(3, *shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    report = check_bounds_sound(
        model, x, 0.04, lambda box: ibp(model, box), n_samples=32, pgd_steps=10, data_min=0.0, data_max=1.0
    )
    assert report.ok and report.n_points > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", [n for n in sorted(ZOO) if "bn" in n or n == "resnet"])
def test_ibp_sound_on_zoo_train_mode_batchnorm(name, dtype):
    model, shape = make_zoo_model(name, dtype=dtype, seed=3)
    model.train()
    x = torch.rand(4, *shape, dtype=dtype, generator=torch.Generator().manual_seed(4))
    frozen = freeze_batch_stats(model, x)
    check_bounds_sound(
        frozen,
        x,
        0.04,
        lambda box: ibp(model, box, clean=x),
        n_samples=32,
        pgd_steps=10,
        data_min=0.0,
        data_max=1.0,
    )


def test_ibp_l2_box_sound():
    model, shape = make_zoo_model("cnn-stride-pad", seed=5)
    x = torch.rand(3, *shape, dtype=torch.float64)
    check_bounds_sound(
        model,
        x,
        0.3,
        lambda box: ibp(model, box),
        norm="2",
        n_samples=32,
        pgd_steps=10,
        data_min=0.0,
        data_max=1.0,
    )


def test_point_box_gives_the_forward_pass():
    model, shape = make_zoo_model("resnet", seed=6)
    x = torch.rand(2, *shape, dtype=torch.float64)
    out = ibp(model, Interval.point(x))
    torch.testing.assert_close(out.lower, model(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.upper, model(x), rtol=1e-10, atol=1e-10)


def test_bounds_contain_forward_and_widen_with_eps():
    model, shape = make_zoo_model("cnn-maxpool", seed=7)
    x = torch.rand(2, *shape, dtype=torch.float64)
    widths = [ibp(model, Interval.from_eps(x, e)).width.mean().item() for e in (0.0, 0.01, 0.05)]
    assert widths[0] == 0 and widths[0] < widths[1] < widths[2]


def test_return_clean_matches_model_and_updates_running_stats_once():
    model, shape = make_zoo_model("cnn-bn-avgpool", seed=8)
    model.train()
    reference = copy.deepcopy(model)
    x = torch.rand(5, *shape, dtype=torch.float64)
    out, logits = ibp(model, Interval.from_eps(x, 0.01), clean=x, return_clean=True)
    torch.testing.assert_close(logits, reference(x))
    for a, b in zip(model.buffers(), reference.buffers()):
        assert torch.equal(a, b)
    assert out.contains(logits, atol=1e-9).all()


def test_train_mode_batchnorm_without_clean_names_the_layer():
    model, _ = make_zoo_model("mlp-bn", seed=0)
    model.train()
    with pytest.raises(ValueError, match=r"^2 \(BatchNorm1d\): .*pass the clean activation"):
        ibp(model, Interval.point(torch.rand(3, 6, dtype=torch.float64)))


def test_unsupported_module_names_path_and_type():
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.GELU()))
    with pytest.raises(UnsupportedModuleError, match=r"features\.3 \(GELU\)") as info:
        ibp(model, Interval.point(torch.rand(2, 3)))
    assert info.value.path == "features.3" and info.value.module_type is nn.GELU
    assert isinstance(info.value, NotImplementedError)
    with pytest.raises(UnsupportedModuleError, match=r"^unsupported module model \(GELU\)"):
        ibp(nn.GELU(), Interval.point(torch.rand(2, 3)))


def test_subclass_overriding_forward_is_not_trusted_and_hooks_are_rejected():
    class ScaledLinear(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(UnsupportedModuleError, match=r"0 \(ScaledLinear\)"):
        ibp(nn.Sequential(ScaledLinear(3, 2)), Interval.point(torch.rand(1, 3)))

    class PlainSubclass(nn.ReLU):
        pass

    out = ibp(PlainSubclass(), Interval(-torch.ones(2), torch.ones(2)))
    assert torch.equal(out.lower, torch.zeros(2))

    lin = nn.Linear(3, 2)
    lin.register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(UnsupportedModuleError, match="forward hooks"):
        ibp(nn.Sequential(lin), Interval.point(torch.rand(1, 3)))


def test_dropout_only_in_eval_mode():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    box = Interval.from_eps(torch.rand(2, 3), 0.1)
    with pytest.raises(UnsupportedModuleError, match="Dropout in train mode"):
        ibp(model, box)
    model.eval()
    ibp(model, box)


class Square(nn.Module):
    """x ** 2 elementwise, with its own interval rule (the extension hook)."""

    def forward(self, x):
        return x * x

    def interval_forward(self, box):
        lo, hi = box.lower, box.upper
        sq_max = torch.maximum(lo * lo, hi * hi)
        sq_min = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(lo), torch.minimum(lo * lo, hi * hi))
        return Interval(sq_min, sq_max)


class ScaleByCleanMean(nn.Module):
    """Uses the clean batch in its bounds: the hook may take ``clean=``."""

    def forward(self, x):
        return x - x.mean(0, keepdim=True).detach()

    def interval_forward(self, box, clean=None):
        assert clean is not None
        shift = clean.mean(0, keepdim=True)
        return Interval(box.lower - shift, box.upper - shift)


def test_interval_forward_hook_is_used_as_is():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), Square(), nn.Linear(4, 2))
    x = torch.rand(3, 3, dtype=torch.float64)
    model = model.to(torch.float64)
    check_bounds_sound(model, x, 0.2, lambda box: ibp(model, box), n_samples=32, pgd_steps=10)
    shifted = nn.Sequential(nn.Linear(3, 3), ScaleByCleanMean()).to(torch.float64)
    out, clean_out = ibp(shifted, Interval.from_eps(x, 0.1), clean=x, return_clean=True)
    assert out.contains(clean_out, atol=1e-12).all()


def test_interval_forward_must_return_an_interval():
    class Bad(nn.Module):
        def forward(self, x):
            return x

        def interval_forward(self, box):
            return box.lower, box.upper

    with pytest.raises(TypeError, match=r"Bad\)\.interval_forward returned tuple, expected an Interval"):
        ibp(nn.Sequential(Bad()), Interval.point(torch.zeros(1, 2)))


def test_register_rule_for_a_new_type():
    class Cube(nn.Module):
        def forward(self, x):
            return x**3

    with pytest.raises(UnsupportedModuleError):
        ibp(Cube(), Interval.point(torch.zeros(1, 2)))
    register_rule(Cube, lambda m, box, clean: interval_monotone(box, m))
    out = ibp(nn.Sequential(Cube()), Interval(torch.tensor([[-2.0, 1.0]]), torch.tensor([[1.0, 3.0]])))
    assert torch.equal(out.lower, torch.tensor([[-8.0, 1.0]]))
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_rule(int, lambda m, box, clean: box)


def test_residual_container_forward_and_bounds():
    torch.manual_seed(1)
    block = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    res = Residual(block).to(torch.float64)
    x = torch.rand(2, 3, dtype=torch.float64)
    torch.testing.assert_close(res(x), block.to(torch.float64)(x) + x)
    box = Interval.from_eps(x, 0.1)
    out = ibp(res, box)
    inner = ibp(block, box)
    torch.testing.assert_close(out.lower, inner.lower + box.lower)
    res2 = Residual(nn.Linear(3, 2), shortcut=nn.Linear(3, 2)).to(torch.float64)
    check_bounds_sound(res2, x, 0.1, lambda b: ibp(res2, b), n_samples=16, pgd_steps=5)


def test_observer_sees_every_module():
    model, shape = make_zoo_model("resnet", seed=0)
    seen = []
    ibp(
        model,
        Interval.from_eps(torch.rand(2, *shape, dtype=torch.float64), 0.01),
        observer=lambda path, m, box_in, box_out: seen.append((path, type(m).__name__)),
    )
    assert (
        ("1.0.block.1", "BatchNorm2d") in seen and ("1.0", "Residual") in seen and ("", "Sequential") in seen
    )
    relu_inputs = [p for p, t in seen if t == "ReLU"]
    assert len(relu_inputs) == 5


def test_bad_arguments():
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="box must be a certcore.bounds.Interval"):
        ibp(model, torch.zeros(1, 3))
    with pytest.raises(TypeError, match="module must be an nn.Module"):
        ibp(lambda x: x, Interval.point(torch.zeros(1, 3)))
    with pytest.raises(ValueError, match="return_clean=True needs the clean batch"):
        ibp(model, Interval.point(torch.zeros(1, 3)), return_clean=True)
    with pytest.raises(ValueError, match="must match the box's per-sample shape"):
        ibp(model, Interval.point(torch.zeros(1, 3)), clean=torch.zeros(1, 4))
    with pytest.raises(
        TypeError, match=r"0 \(Linear\): weight has dtype torch.float32 but the interval has "
    ):
        ibp(nn.Sequential(model), Interval.point(torch.zeros(1, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"1 \(Linear\): .*in_features=4"):
        ibp(nn.Sequential(nn.Linear(3, 3), nn.Linear(4, 2)), Interval.point(torch.zeros(1, 3)))


def test_unbounded_or_nan_inputs_raise_unless_unchecked():
    model = nn.Sequential(nn.Linear(2, 2))
    box = Interval(torch.tensor([[-float("inf"), 0.0]]), torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="ibp needs a bounded input box, but it has 1 infinite"):
        ibp(model, box)
    with pytest.raises(ValueError, match="bounded input box"):
        ibp_margin_lower(model, box, torch.tensor([0]))
    ibp(model, box, check=False)  # the fast path skips value checks
    with pytest.raises(ValueError, match="clean must be finite"):
        ibp(model, Interval.point(torch.zeros(1, 2)), clean=torch.tensor([[float("nan"), 0.0]]))


def test_ibp_training_step_reduces_the_robust_loss():
    torch.manual_seed(0)
    model, shape = make_zoo_model("cnn-bn-avgpool", seed=9)
    model.train()
    x = torch.rand(16, *shape, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    box = Interval.from_eps(x, 0.02, 0.0, 1.0)

    def robust_loss():
        lb = ibp_margin_lower(model, box, y, clean=x)
        return F.cross_entropy(torch.cat([torch.zeros_like(lb[:, :1]), -lb], dim=1), torch.zeros_like(y))

    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss0 = robust_loss()
    opt.zero_grad()
    loss0.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    with torch.no_grad():
        loss1 = robust_loss()
    assert loss1 < loss0


@pytest.mark.cuda
def test_ibp_kit_and_pgd_on_cuda():
    from certcore.bounds import certified
    from certcore.testing import check_certified_robust

    model, shape = make_zoo_model("resnet", dtype=torch.float32, seed=10)
    model = model.cuda()
    x = torch.rand(4, *shape, device="cuda")
    y = model(x).argmax(1)
    box = Interval.from_eps(x, 0.01, 0.0, 1.0)
    assert ibp(model, box).lower.device.type == "cuda"
    check_bounds_sound(
        model, x, 0.01, lambda b: ibp(model, b), n_samples=8, pgd_steps=5, data_min=0.0, data_max=1.0
    )
    mask = certified(ibp_margin_lower(model, box, y.cpu()))
    check_certified_robust(model, x, y, 0.01, mask, pgd_steps=5, data_min=0.0, data_max=1.0)
