"""The soundness kit every certkit package's tests use.

Bounds: ``check_bounds_sound(fn, x, eps, bound_fn)`` builds the input box
``Interval.from_eps(x, eps, data_min, data_max, norm)``, calls ``bound_fn(box)`` (an ``Interval`` or a
``(lower, upper)`` pair of the shape of ``fn(x)``) and checks that ``fn`` stays inside the bounds at
the centre, at uniform samples, at corners and at PGD points pushing each output up and down::

    import torch
    from certcore.bounds import Interval, ibp
    from certcore.testing import check_bounds_sound, check_certified_robust, make_zoo_model

    model, shape = make_zoo_model("cnn-bn-avgpool", dtype=torch.float64)
    x = torch.rand(4, *shape, dtype=torch.float64)
    report = check_bounds_sound(model, x, 0.05, lambda box: ibp(model, box), data_min=0.0, data_max=1.0)
    print(report)        # AssertionError instead if a point escapes the bounds

    # another package's certifier plugs in the same way:
    check_bounds_sound(model, x, 0.05, lambda box: my_crown(model, box.lower, box.upper))
    # ℓ2 certifiers may ignore the box (its ℓ2 enclosure) and close over x and eps:
    check_bounds_sound(model, x, 0.5, lambda box: gloro_bounds(model, x, 0.5), norm="2")

Train-mode BatchNorm couples the samples of a batch; IBP with ``clean=x`` bounds the model with BN
frozen to the clean batch's statistics, which :func:`freeze_batch_stats` builds::

    model.train()
    check_bounds_sound(freeze_batch_stats(model, x), x, eps, lambda box: ibp(model, box, clean=x))

Certificates: ``check_certified_robust(model, x, y, eps, certified_mask)`` asserts that no certified
sample is misclassified at its clean point or by PGD::

    mask = certified(ibp_margin_lower(model, Interval.from_eps(x, eps, 0.0, 1.0), y))
    check_certified_robust(model, x, y, eps, mask, data_min=0.0, data_max=1.0)

Tolerances default to :func:`default_tolerance` of the input dtype (float32: 1e-5 absolute plus
1e-5 relative to the bound's magnitude; float64: 1e-9 and 1e-9): bound computations round too.
"""

from certcore.testing.models import ZOO, make_zoo_model, randomize_batchnorm, tiny_cnn, tiny_mlp, tiny_resnet
from certcore.testing.soundness import (
    RobustnessReport,
    SoundnessReport,
    Violation,
    check_bounds_sound,
    check_certified_robust,
    default_tolerance,
    freeze_batch_stats,
)

__all__ = [
    "ZOO",
    "RobustnessReport",
    "SoundnessReport",
    "Violation",
    "check_bounds_sound",
    "check_certified_robust",
    "default_tolerance",
    "freeze_batch_stats",
    "make_zoo_model",
    "randomize_batchnorm",
    "tiny_cnn",
    "tiny_mlp",
    "tiny_resnet",
]
