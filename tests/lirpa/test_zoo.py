"""The model zoo (lirpa.zoo) against the definitions in auto_LiRPA's examples/vision/models/.

Expected parameter counts are worked out by hand from the original definitions (weights + biases
of every Conv2d/Linear, weight + bias of every BatchNorm) for the shapes the original supports:
both MNIST (1, 28, 28) and CIFAR (3, 32, 32) for the feedforward models and model_resnet, CIFAR
only for WideResNet, DenseNet and ResNeXt (their first conv and flattened size are hard-coded), and
Tiny-ImageNet / downscaled-ImageNet inputs (3, 56, 56) and (3, 64, 64) with their own class counts
for the two ImageNet WideResNets of wide_resnet_imagenet64.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm
from lirpa.zoo import (
    ALIASES,
    MODELS,
    ConvStackSpec,
    MLPSpec,
    ModelSpec,
    ResNeXtSpec,
    WideResNetImageNet64Spec,
    build_model,
)

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
CROP56, IMAGENET64 = (3, 56, 56), (3, 64, 64)  # the training scripts' 56×56 crops; the 64×64 images

# fmt: off
EXPECTED_PARAMS = {
    # feedforward.py mlp_2layer: 784·256+256 + 256·10+10 | 3072·256+256 + 2570
    ("mlp_2layer", MNIST): 203_530, ("mlp_2layer", CIFAR): 789_258,
    # mlp_3layer: 784·256+256 = 200960, 256·128+128 = 32896, 128·10+10 = 1290
    #             CIFAR: 3072·256+256 = 786688 + 32896 + 1290
    ("mlp_3layer", MNIST): 235_146, ("mlp_3layer", CIFAR): 820_874,
    # mlp_5layer: 200960 + 2·(256·256+256) + (256·128+128) + 1290 | 786688 + ...
    ("mlp_5layer", MNIST): 366_730, ("mlp_5layer", CIFAR): 952_458,
    # cnn_4layer(width 2, linear 256): conv 1→8 4x4 = 136, conv 8→16 4x4 = 2064,
    #   fc 16·7·7 → 256 = 200960, fc 256 → 10 = 2570 | CIFAR: 392 + 2064 + 1024·256+256 + 2570
    ("cnn_4layer", MNIST): 205_730, ("cnn_4layer", CIFAR): 267_426,
    # cnn_6layer(width 32, linear 256): convs 1→32, 32→32, 32→64 (s2), 64→64 (3x3, bias),
    #   fc 64·14·14 → 256, fc 256 → 10 | CIFAR: first conv 3→32, fc 64·16·16 → 256
    ("cnn_6layer", MNIST): 3_279_082, ("cnn_6layer", CIFAR): 4_262_698,
    # cnn_7layer(width 64, linear 512): convs 3→64 (1792), 64→64 (36928), 64→128 s2 (73856),
    #   128→128 (147584) ×2, fc 128·16·16 → 512 (16777728), fc 512 → 10 (5130) = 17190602
    #   MNIST: first conv 640, fc 128·14·14 → 512 = 12845568
    ("cnn_7layer", MNIST): 13_257_290, ("cnn_7layer", CIFAR): 17_190_602,
    # cnn_7layer_bn = cnn_7layer + BatchNorm2d weight+bias: 2·(64+64+128+128+128) = 1024
    ("cnn_7layer_bn", MNIST): 13_258_314, ("cnn_7layer_bn", CIFAR): 17_191_626,
    # resnet.py model_resnet(mult 16, width 1, N 1): conv 3→16 = 448 (MNIST 1→16 = 160);
    #   2 plain blocks 16→16: (2320 + 272 + 2320)·2 = 9824;
    #   down block 16→32: 4x4/2 8224 + skip 2x2/2 2080 + 3x3 9248 = 19552;
    #   down block 32→64: 32832 + 8256 + 36928 = 78016;
    #   Linear 64·8·8 → 1000 = 4097000, Linear 1000 → 10 = 10010
    ("resnet", MNIST): 4_214_562, ("resnet", CIFAR): 4_214_850,
    # wide_resnet_cifar.py Wide_ResNet(10, 4, use_bn, no pooling) [wide_resnet_cifar_bn_wo_pooling]:
    #   conv 3→16 = 448; block 16→128: bn 32 + 18560 + 147584 + shortcut 2176 = 168352;
    #   block 128→256 s2: 256 + 295168 + 590080 + 33024 = 918528;
    #   block 256→512 s2: 512 + 1180160 + 2359808 + 131584 = 3672064;
    #   Linear 512·8·8 → 512 = 16777728, Linear 512 → 10 = 5130
    ("wide_resnet", CIFAR): 21_542_250,
    # wide_resnet_cifar_bn (AvgPool2d(8)): the same with Linear 512 → 512 = 262656
    ("wide_resnet_cifar_bn", CIFAR): 5_027_178,
    # densenet.py Densenet_cifar_32 (growth 32, blocks 2-4-4): conv 3→64 = 1792;
    #   Bottleneck(c) = bn 2c + 1x1 c→128 (128c+128) + bn 256 + 3x3 128→32 (36896) = 130c + 37280;
    #   dense1 c = 64, 96: 95360; trans1 bn 256 + 128→64 8256; dense2 c = 64..160: 207360;
    #   trans2 bn 384 + 192→96 18528; dense3 c = 96..192: 224000; bn(224) 448;
    #   Linear 14336 → 512 = 7340544; Linear 512 → 10 = 5130
    ("densenet", CIFAR): 7_902_058,
    # resnext.py ResNeXt_cifar (blocks 1-1-1, cardinality 2, width 32): conv 3→16 = 448;
    #   block 16 (gw 64): 1088 + bn 128 + grouped 64·32·9+64 = 18496 + 64→128 8320 + skip 2176 = 30208;
    #   block 128 s2 (gw 128): 16512 + 256 + 73856 + 33024 + 33024 = 156672;
    #   block 256 s2 (gw 256): 65792 + 512 + 295168 + 131584 + 131584 = 624640;
    #   Linear 512·8·8 → 512 = 16777728; Linear 512 → 10 = 5130
    ("resnext", CIFAR): 17_594_826,
}

# The ImageNet WideResNets at their own class counts: (name, input shape, classes) → parameters.
# wide_resnet_imagenet64.py Wide_ResNet(depth 10, widen_factor 10, in_planes 16): stages 16, 160, 320,
#   640, one wide_basic each; block(i → o) = bn1 2i + conv1 9io+o + bn2 2o + conv2 9o²+o [+ 1x1 io+o]:
#   conv 3→16: 432 + 16 = 448
#   16→160:        32 + 23040+160 + 320 + 230400+160 + 2560+160     = 256832
#   160→320 (s2): 320 + 460800+320 + 640 + 921600+320 + 51200+320   = 1435520
#   320→640 (s2): 640 + 1843200+640 + 1280 + 3686400+640 + 204800+640 = 5738240
#   bn(640) = 1280 → 7432320 before the head; AvgPool2d(7) turns the 14x14 (56 input) or 16x16 (64
#   input) map into 2x2, so Linear(640·4 = 2560 → C) = 2561·C: C = 200 → 7944520, C = 1000 → 9993320.
EXPECTED_PARAMS_IMAGENET = {
    ("wide_resnet_imagenet64", CROP56, 200): 7_944_520,
    ("wide_resnet_imagenet64", IMAGENET64, 200): 7_944_520,
    ("wide_resnet_imagenet64_1000class", CROP56, 1000): 9_993_320,
    ("wide_resnet_imagenet64_1000class", IMAGENET64, 1000): 9_993_320,
}
# fmt: on


def _wrn_imagenet64_params(depth, k, planes, in_ch, classes, pooled_hw):
    """The parameter count of wide_resnet_imagenet64.py's Wide_ResNet, from its definition."""
    widths = [planes, planes * k, 2 * planes * k, 4 * planes * k]
    total = 9 * in_ch * planes + planes  # conv1
    cin = planes
    for stage, stride in ((1, 1), (2, 2), (3, 2)):
        for b in range((depth - 4) // 6):
            cout = widths[stage]
            total += 2 * cin + 9 * cin * cout + cout + 2 * cout + 9 * cout * cout + cout
            if (stride if b == 0 else 1) != 1 or cin != cout:
                total += cin * cout + cout  # the 1x1 shortcut
            cin = cout
    return total + 2 * widths[3] + (widths[3] * pooled_hw + 1) * classes  # bn1, linear


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_has_an_expected_count():
    names = {name for name, _ in EXPECTED_PARAMS} | {name for name, _, _ in EXPECTED_PARAMS_IMAGENET}
    assert names == set(MODELS)


@pytest.mark.parametrize(("name", "shape"), list(EXPECTED_PARAMS), ids=lambda v: str(v))
def test_matches_original_and_traces(name, shape):
    _check_model(name, shape, 10, EXPECTED_PARAMS[(name, shape)])


def _check_model(name, shape, classes, params) -> nn.Module:
    """Parameter count, output shape, an fx trace giving the same outputs, only standard layers."""
    torch.manual_seed(0)
    model = build_model(name, shape, classes).eval()
    assert _num_params(model) == params
    x = torch.rand(2, *shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, classes)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), y, rtol=0, atol=0)
    used = {type(m) for m in model.modules() if not list(m.children())}
    allowed = {nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear, nn.Flatten, nn.AvgPool2d, nn.Sequential}
    assert used <= allowed, used - allowed
    return model


@pytest.mark.parametrize(
    "name", ["mlp_3layer", "cnn_4layer", "cnn_7layer_bn", "resnet", "densenet", "resnext"]
)
def test_num_classes_and_other_shapes(name):
    # The CIFAR-only families are generalised to other channel counts and sizes.
    model = build_model(name, MNIST, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.rand(2, *MNIST)).shape == (2, 7)
    torch.fx.symbolic_trace(model)


def test_state_dict_keys_follow_the_original():
    keys = list(build_model("cnn_7layer_bn", CIFAR).state_dict())
    convs, bns = [0, 3, 6, 9, 12], [1, 4, 7, 10, 13]
    expected = []
    for c, b in zip(convs, bns):
        expected += [f"{c}.weight", f"{c}.bias"]
        expected += [
            f"{b}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        ]
    expected += ["16.weight", "16.bias", "18.weight", "18.bias"]
    assert keys == expected
    assert list(build_model("mlp_3layer", MNIST).state_dict()) == [
        f"fc{i}.{k}" for i in (1, 2, 3) for k in ("weight", "bias")
    ]
    resnext = build_model("resnext", CIFAR).state_dict()
    assert {"conv1.weight", "layer2.0.conv2.weight", "layer3.0.shortcut.0.weight", "linear1.weight"} <= set(
        resnext
    )
    assert resnext["layer1.0.conv2.weight"].shape == (64, 32, 3, 3)  # groups = cardinality = 2
    wide = build_model("wide_resnet", CIFAR).state_dict()
    assert {"layer1.0.bn1.weight", "layer1.0.shortcut.0.weight", "linear2.bias"} <= set(wide)
    dense = build_model("densenet", CIFAR).state_dict()
    assert {"dense3.3.conv2.weight", "trans2.conv.weight", "bn.running_var"} <= set(dense)


def test_aliases_and_specs():
    assert set(ALIASES.values()) <= set(MODELS)
    assert _num_params(build_model("ResNeXt_cifar", CIFAR)) == EXPECTED_PARAMS[("resnext", CIFAR)]
    spec = MLPSpec(hidden=(32,))
    assert isinstance(spec, ModelSpec)
    assert _num_params(build_model(spec, (1, 4, 4), 3)) == 16 * 32 + 32 + 32 * 3 + 3
    small = ConvStackSpec(width=4, linear_size=8, batch_norm=True)
    assert build_model(small, (3, 8, 8))(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(AttributeError):
        spec.hidden = (1,)  # frozen


@pytest.mark.parametrize("bad", [(28, 28), (1, 28, 28, 1), (0, 28, 28), (1.0, 28, 28), "1x28x28", None])
def test_bad_input_shape_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"input_shape must be \(channels, height, width\)"):
        build_model("cnn_7layer_bn", bad)


def test_too_small_inputs_and_other_bad_arguments():
    with pytest.raises(ValueError, match="wide_resnet: input too small.*7x7.*average pooling"):
        build_model("wide_resnet_cifar_bn", MNIST)  # 28 → 14 → 7 < the 8x8 pooling
    with pytest.raises(ValueError, match="cnn_4layer: input too small"):
        build_model("cnn_4layer", (1, 2, 2))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("resnet", CIFAR, 0)
    with pytest.raises(ValueError, match="unknown model 'cnn_9layer'.*cnn_7layer_bn"):
        build_model("cnn_9layer", CIFAR)
    with pytest.raises(ValueError, match="blocks must be three counts"):
        build_model(ResNeXtSpec(blocks=(1, 1)), CIFAR)  # type: ignore[arg-type]


# ------------------------------------------------------------------ wide_resnet_imagenet64.py


@pytest.mark.parametrize(("name", "shape", "classes"), list(EXPECTED_PARAMS_IMAGENET), ids=lambda v: str(v))
def test_imagenet_wide_resnets_match_original(name, shape, classes):
    params = EXPECTED_PARAMS_IMAGENET[(name, shape, classes)]
    assert params == _wrn_imagenet64_params(10, 10, 16, 3, classes, pooled_hw=4)
    state = _check_model(name, shape, classes, params).state_dict()
    # the original's names: wide_basic has bn1, conv1, bn2, conv2, shortcut; the head is bn1, linear
    keys = {"layer1.0.bn2.running_var", "layer2.0.shortcut.0.weight", "bn1.weight", "linear.bias"}
    assert keys <= set(state)
    assert state["layer2.0.conv2.weight"].shape == (320, 320, 3, 3)
    assert state["linear.weight"].shape == (classes, 2560)
    assert MODELS[name] == WideResNetImageNet64Spec(depth=10, widen_factor=10, in_planes=16)


def test_imagenet_wide_resnet_other_configurations():
    # depth 16 (two blocks per stage), k 2, in_planes 4, one input channel: 32 → 16 → 8 → pool 7 → 1x1
    spec = WideResNetImageNet64Spec(depth=16, widen_factor=2, in_planes=4)
    model = build_model(spec, (1, 32, 32), 5).eval()
    assert _num_params(model) == _wrn_imagenet64_params(16, 2, 4, 1, 5, pooled_hw=1)
    assert len(model.layer2) == 2 and len(model.layer2[1].shortcut) == 0  # identity shortcut
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match=r"wide_resnet_imagenet64: input too small.*6x6.*7x7 average pool"):
        build_model("wide_resnet_imagenet64", (3, 24, 24), 200)  # 24 → 12 → 6 < the 7x7 pooling
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        build_model(WideResNetImageNet64Spec(depth=12), CROP56, 200)
    with pytest.raises(ValueError, match="widen_factor must be a positive int"):
        build_model(WideResNetImageNet64Spec(widen_factor=0), CROP56, 200)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("wide_resnet_imagenet64_1000class", IMAGENET64, 0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("wide_resnet_imagenet64", CROP56, 200), ("wide_resnet_imagenet64_1000class", IMAGENET64, 1000)],
    ids=["tiny56", "imagenet64"],
)
def test_imagenet_wide_resnets_ibp_contains_the_clean_output(name, shape, classes):
    torch.manual_seed(0)
    model = build_model(name, shape, classes).double().eval()
    x = torch.rand(2, *shape, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
    bounded = BoundedModule(model, x)
    with torch.no_grad():
        lb, ub = bounded.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(1e-9)),), method="IBP")
    assert lb.shape == ub.shape == y.shape == (2, classes)
    assert bool((lb <= y).all()) and bool((y <= ub).all())
    assert 0 < float((ub - lb).min()) and float((ub - lb).max()) < 1.0  # propagated, and not vacuous
