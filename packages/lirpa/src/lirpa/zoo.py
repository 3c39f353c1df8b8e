"""The vision model zoo of auto_LiRPA's examples, as typed specs.

One frozen dataclass per family; ``spec.build(input_shape, num_classes)`` returns a plain
``nn.Module`` made of standard layers (Conv2d, BatchNorm2d, ReLU, Linear, Flatten, AvgPool2d,
residual ``a + b``, ``torch.cat``) with no data-dependent control flow, so ``torch.fx`` traces it.
``MODELS`` holds the named configurations of ``examples/vision/models/__init__.py`` (``Models``)
that the examples and §8.3 of the reference use; ``build_model`` accepts a name, one of the
original names in ``ALIASES`` or a spec.

Sources (Verified-Intelligence/auto_LiRPA, ``examples/vision/models/``):

==================================  ====================================================================
name here                           original
==================================  ====================================================================
mlp_2layer / 3layer / 5layer        feedforward.py ``mlp_2layer``, ``mlp_3layer``, ``mlp_5layer``
cnn_4layer                          feedforward.py ``cnn_4layer``
cnn_6layer / 7layer / 7l_bn         feedforward.py ``cnn_6layer``, ``cnn_7layer``, ``cnn_7layer_bn``
resnet                              resnet.py ``model_resnet`` (Wong et al. 2018; ``Models['resnet']``)
wide_resnet                         wide_resnet_cifar.py ``wide_resnet_cifar_bn_wo_pooling``
wide_resnet_cifar_bn                wide_resnet_cifar.py ``wide_resnet_cifar_bn``
wide_resnet_imagenet64              wide_resnet_imagenet64.py ``wide_resnet_imagenet64`` (Tiny-ImageNet)
wide_resnet_imagenet64_1000class    wide_resnet_imagenet64.py ``wide_resnet_imagenet64_1000class``
densenet                            densenet.py ``Densenet_cifar_32``
resnext                             resnext.py ``ResNeXt_cifar``
==================================  ====================================================================

For the input shapes the originals were written for, the layers, their order, their parameter
counts, their construction order (hence the weights drawn after ``torch.manual_seed``) and the
``state_dict`` keys of the feedforward, ResNeXt, DenseNet and WideResNet families are the
original's. Differences: the originals hard-code the classes (10; 200 and 1000 for the two
ImageNet WideResNets) and, for the CIFAR- and ImageNet-only families, 3 input channels and the
input size (32×32; ``in_dim`` for the ImageNet WideResNets); here both come from the arguments and
the flattened sizes are computed from the input shape. So ``wide_resnet_imagenet64`` and
``wide_resnet_imagenet64_1000class``, which differ only in their hard-coded class count, are the
same spec here under the original's two names. ``resnet`` keeps the original's special case of
28×28 inputs (padding 3 in the first conv, so the feature maps are 32×32 as for CIFAR) and its conv
initialisation (normal with std sqrt(2 / (k·k·out)), zero bias); its residual blocks are written
as modules (``ResNetBlock``) rather than the original's ``Dense``/``DenseSequential``. The
dropout variants of ``wide_resnet_cifar`` are not in the zoo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "ALIASES",
    "MODELS",
    "CNN4LayerSpec",
    "ConvStackSpec",
    "DenseNetSpec",
    "MLPSpec",
    "ModelSpec",
    "ResNetSpec",
    "ResNeXtSpec",
    "WideResNetImageNet64Spec",
    "WideResNetSpec",
    "build_model",
    "check_input_shape",
]

InputShape = tuple[int, int, int]


def check_input_shape(input_shape: object, model: str) -> InputShape:
    """``input_shape`` as ``(channels, height, width)`` of positive ints, or a ValueError."""
    if (
        not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise ValueError(
            f"{model}: input_shape must be (channels, height, width) of positive ints, "
            f"e.g. (1, 28, 28) for MNIST or (3, 32, 32) for CIFAR-10; got {input_shape!r}"
        )
    return (input_shape[0], input_shape[1], input_shape[2])


def _check_num_classes(num_classes: object, model: str) -> int:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"{model}: num_classes must be a positive int; got {num_classes!r}")
    return num_classes


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _spatial(hw: tuple[int, int], kernel: int, stride: int, padding: int, model: str, where: str):
    """Output (H, W) of a conv/pool; a ValueError naming the layer when the map vanishes."""
    out = tuple(_conv_out(s, kernel, stride, padding) for s in hw)
    if min(out) < 1:
        raise ValueError(
            f"{model}: input too small: the feature map is {hw[0]}x{hw[1]} before {where} "
            f"(kernel {kernel}, stride {stride}, padding {padding}), which leaves nothing"
        )
    return out


@dataclass(frozen=True)
class ModelSpec:
    """A model family's configuration; ``build`` makes a freshly initialised model."""

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        raise NotImplementedError


# ---------------------------------------------------------------------------------- feedforward


class MLP(nn.Module):
    """Flatten, then ``fc1 … fcN`` with a ReLU after all but the last (feedforward.py mlp_*)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        widths = [in_features, *hidden, num_classes]
        self.depth = len(widths) - 1
        for i in range(self.depth):
            self.add_module(f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))
            if i < self.depth - 1:
                self.add_module(f"relu{i + 1}", nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        for i in range(1, self.depth):
            x = getattr(self, f"relu{i}")(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.depth}")(x)


@dataclass(frozen=True)
class MLPSpec(ModelSpec):
    """feedforward.py ``mlp_2layer`` (256), ``mlp_3layer`` (256, 128), ``mlp_5layer`` (256³, 128)."""

    hidden: tuple[int, ...] = (256, 128)

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        c, h, w = check_input_shape(input_shape, "mlp")
        return MLP(c * h * w, self.hidden, _check_num_classes(num_classes, "mlp"))


class CNN4Layer(nn.Module):
    """feedforward.py ``cnn_4layer``: two 4×4 stride-2 convs, then two linear layers."""

    def __init__(self, in_ch: int, flat: int, width: int, linear_size: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 4 * width, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4 * width, 8 * width, 4, stride=2, padding=1)
        self.fc1 = nn.Linear(flat, linear_size)
        self.fc2 = nn.Linear(linear_size, num_classes)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.flatten = nn.Flatten()

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc2(x)


@dataclass(frozen=True)
class CNN4LayerSpec(ModelSpec):
    """feedforward.py ``cnn_4layer(in_ch, in_dim, width=2, linear_size=256)``."""

    width: int = 2
    linear_size: int = 256

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        c, h, w = check_input_shape(input_shape, "cnn_4layer")
        hw = _spatial((h, w), 4, 2, 1, "cnn_4layer", "conv1")
        hw = _spatial(hw, 4, 2, 1, "cnn_4layer", "conv2")
        flat = 8 * self.width * hw[0] * hw[1]
        n = _check_num_classes(num_classes, "cnn_4layer")
        return CNN4Layer(c, flat, self.width, self.linear_size, n)


@dataclass(frozen=True)
class ConvStackSpec(ModelSpec):
    """feedforward.py ``cnn_6layer`` / ``cnn_7layer`` / ``cnn_7layer_bn`` as one ``nn.Sequential``.

    3×3 convs (padding 1) of ``width, width, 2·width (stride 2), 2·width[, 2·width]`` channels
    (``num_convs`` = 4 or 5), each followed by BatchNorm2d when ``batch_norm`` and a ReLU; then
    Flatten, Linear(→ ``linear_size``), ReLU, Linear(→ classes). No BatchNorm1d. The Sequential
    indices (hence ``state_dict`` keys) are the original's.
    """

    width: int = 64
    linear_size: int = 512
    batch_norm: bool = True
    num_convs: int = 5

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        name = f"cnn_{self.num_convs + 2}layer{'_bn' if self.batch_norm else ''}"
        if self.num_convs not in (4, 5):
            raise ValueError(f"{name}: num_convs must be 4 or 5; got {self.num_convs}")
        c, h, w = check_input_shape(input_shape, name)
        n = _check_num_classes(num_classes, name)
        channels = [self.width, self.width, 2 * self.width, 2 * self.width, 2 * self.width]
        strides = [1, 1, 2, 1, 1]
        layers: list[nn.Module] = []
        hw, in_ch = (h, w), c
        for i in range(self.num_convs):
            layers.append(nn.Conv2d(in_ch, channels[i], 3, stride=strides[i], padding=1))
            if self.batch_norm:
                layers.append(nn.BatchNorm2d(channels[i]))
            layers.append(nn.ReLU())
            hw = _spatial(hw, 3, strides[i], 1, name, f"conv {i + 1}")
            in_ch = channels[i]
        layers += [
            nn.Flatten(),
            nn.Linear(in_ch * hw[0] * hw[1], self.linear_size),
            nn.ReLU(),
            nn.Linear(self.linear_size, n),
        ]
        return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------- resnet.py


class ResNetBlock(nn.Module):
    """One block of resnet.py ``model_resnet``: ``relu(shortcut(x) + conv_out(relu(conv_in(x))))``.

    Plain: conv_in 3×3/1 (padding 1), shortcut 1×1/1. Downsampling: conv_in 4×4/2 (padding 1),
    shortcut 2×2/2 (no padding). conv_out is 3×3/1 (padding 1). All with bias.
    """

    def __init__(self, in_ch: int, out_ch: int, downsample: bool) -> None:
        super().__init__()
        k_in, stride, k_skip = (4, 2, 2) if downsample else (3, 1, 1)
        # Construction order = the original's (conv_in, skip, conv_out): same weights per seed.
        self.conv_in = nn.Conv2d(in_ch, out_ch, k_in, stride=stride, padding=1)
        self.relu_in = nn.ReLU()
        self.shortcut = nn.Conv2d(in_ch, out_ch, k_skip, stride=stride, padding=0)
        self.conv_out = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1)
        self.relu_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_out(self.relu_in(self.conv_in(x)))
        return self.relu_out(self.shortcut(x) + out)


@dataclass(frozen=True)
class ResNetSpec(ModelSpec):
    """resnet.py ``model_resnet(in_ch, in_dim, width=1, mult=16, N=1)``, the ResNet of Wong et al.
    2018 (``Models['resnet']``, simple_training.py's default model).

    conv 3×3 (→ mult) + ReLU; ``N + 1`` plain blocks (→ mult·width); a downsampling block
    (→ 2·mult·width) and ``N − 1`` plain ones; a downsampling block (→ 4·mult·width) and ``N − 1``
    plain ones; Flatten, Linear(→ 1000), ReLU, Linear(→ classes).
    """

    mult: int = 16
    width: int = 1
    n: int = 1

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        c, h, w = check_input_shape(input_shape, "resnet")
        classes = _check_num_classes(num_classes, "resnet")
        if self.n < 1:
            raise ValueError(f"resnet: n (the original's N) must be >= 1; got {self.n}")
        pad = 3 if h == 28 else 1  # the original: padding=3 if in_dim == 28 else 1
        hw = _spatial((h, w), 3, 1, pad, "resnet", "conv1")
        m, k = self.mult, self.width
        plan = [(m, m * k, False)] + [(m * k, m * k, False)] * self.n
        plan += [(m * k, 2 * m * k, True)] + [(2 * m * k, 2 * m * k, False)] * (self.n - 1)
        plan += [(2 * m * k, 4 * m * k, True)] + [(4 * m * k, 4 * m * k, False)] * (self.n - 1)
        layers: list[nn.Module] = [nn.Conv2d(c, m, 3, stride=1, padding=pad), nn.ReLU()]
        for i, (cin, cout, down) in enumerate(plan):
            layers.append(ResNetBlock(cin, cout, down))
            if down:
                hw = _spatial(hw, 4, 2, 1, "resnet", f"block {i + 1}")
        layers += [
            nn.Flatten(),
            nn.Linear(4 * m * k * hw[0] * hw[1], 1000),
            nn.ReLU(),
            nn.Linear(1000, classes),
        ]
        model = nn.Sequential(*layers)
        for module in model.modules():  # the original's re-initialisation of every conv
            if isinstance(module, nn.Conv2d):
                fan = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                module.weight.data.normal_(0, math.sqrt(2.0 / fan))
                module.bias.data.zero_()
        return model


# ------------------------------------------------------------------------ wide_resnet_cifar.py


class WideBasic(nn.Module):
    """wide_resnet_cifar.py ``wide_basic`` (no dropout): conv2(relu([bn2](conv1(relu([bn1](x)))))) + shortcut.

    ``second_bn``: wide_resnet_imagenet64.py's ``wide_basic``, which also has ``bn2`` between conv1 and
    the second ReLU (its dropout is commented out in the original). Both convs are 3×3 with padding 1 and
    bias, conv2 carries the stride; the shortcut is a 1×1 conv with the same stride when the stride or the
    width changes, else the identity. Construction order (bn1, conv1, bn2, conv2, shortcut) and names are
    the originals'; an absent BatchNorm is an empty ``nn.Sequential`` (no parameters, no traced node).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, batch_norm: bool, second_bn: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes) if batch_norm else nn.Sequential()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(planes) if second_bn else nn.Sequential()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1)
        self.shortcut = nn.Sequential()  # empty: the identity, and no node in the traced graph
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride))
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    def __init__(self, spec: WideResNetSpec, in_ch: int, flat: int, num_classes: int) -> None:
        super().__init__()
        k, n = spec.widen_factor, (spec.depth - 4) // 6
        stages = [16, 32 * k, 64 * k, 128 * k]
        self.conv1 = nn.Conv2d(in_ch, stages[0], kernel_size=3, stride=1, padding=1)
        in_planes = stages[0]
        for i, stride in enumerate((1, 2, 2)):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(WideBasic(in_planes, stages[i + 1], s, spec.batch_norm))
                in_planes = stages[i + 1]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(8) if spec.pooling else nn.Sequential()
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(flat, 512)
        self.relu_linear = nn.ReLU()
        self.linear2 = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = self.flatten(self.pool(self.relu(out)))
        return self.linear2(self.relu_linear(self.linear1(out)))


@dataclass(frozen=True)
class WideResNetSpec(ModelSpec):
    """wide_resnet_cifar.py ``Wide_ResNet(depth, widen_factor, dropout_rate=None, num_classes,
    use_bn, use_pooling)``: stages of 16·(2k, 4k, 8k) channels, (depth − 4) / 6 blocks each, final
    ReLU, AvgPool2d(8) when ``pooling``, Linear(→ 512), ReLU, Linear(→ classes)."""

    depth: int = 10
    widen_factor: int = 4
    batch_norm: bool = True
    pooling: bool = False

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        name = "wide_resnet"
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"{name}: depth must be 6n + 4 with n >= 1; got {self.depth}")
        c, h, w = check_input_shape(input_shape, name)
        classes = _check_num_classes(num_classes, name)
        hw = _spatial((h, w), 3, 2, 1, name, "layer2")
        hw = _spatial(hw, 3, 2, 1, name, "layer3")
        if self.pooling:
            hw = _spatial(hw, 8, 8, 0, name, "the 8x8 average pooling")
        return WideResNet(self, c, 128 * self.widen_factor * hw[0] * hw[1], classes)


# ------------------------------------------------------------------- wide_resnet_imagenet64.py


class WideResNetImageNet64(nn.Module):
    def __init__(self, spec: WideResNetImageNet64Spec, in_ch: int, flat: int, num_classes: int) -> None:
        super().__init__()
        n = (spec.depth - 4) // 6
        stages = spec.stage_widths
        self.conv1 = nn.Conv2d(in_ch, stages[0], kernel_size=3, stride=1, padding=1)
        in_planes = stages[0]
        for i, stride in enumerate((1, 2, 2)):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(WideBasic(in_planes, stages[i + 1], s, batch_norm=True, second_bn=True))
                in_planes = stages[i + 1]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn1 = nn.BatchNorm2d(stages[3])
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(7)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(flat, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = self.flatten(self.pool(self.relu(self.bn1(out))))
        return self.linear(out)


@dataclass(frozen=True)
class WideResNetImageNet64Spec(ModelSpec):
    """wide_resnet_imagenet64.py ``Wide_ResNet(depth=10, widen_factor=10, dropout_rate=0.3,
    num_classes, in_planes=16, in_dim=56)``, built by ``wide_resnet_imagenet64`` (200 classes,
    Tiny-ImageNet) and ``wide_resnet_imagenet64_1000class`` (1000 classes, downscaled ImageNet);
    ``tinyimagenet_training.py`` and ``imagenet_training.py`` pass ``--in_planes 16 --widen_factor
    10`` (their defaults) and leave ``in_dim`` at 56, the side of their random / centre crops.

    * conv1: 3×3, stride 1, padding 1, bias, input channels → ``in_planes`` (16);
    * three stages of ``(depth − 4) / 6`` blocks (1 for depth 10) of :class:`WideBasic` with ``second_bn``
      (pre-activation BN-ReLU-conv-BN-ReLU-conv, BatchNorm2d before each conv), widths
      ``in_planes·(k, 2k, 4k)`` = (160, 320, 640) for k = ``widen_factor`` = 10, the first block of
      each stage with stride 1, 2, 2;
    * BatchNorm2d(640), ReLU, AvgPool2d(7) (kernel 7, stride 7, no padding: the 14×14 map of a
      56×56 input and the 16×16 map of a 64×64 one both become 2×2);
    * Flatten, one Linear(640·2·2 = 2560 → classes). No hidden linear layer (unlike the CIFAR
      WideResNets of :class:`WideResNetSpec`).

    The original sizes the Linear as ``640·(in_dim // 4 // 7)²`` and hard-codes 3 input channels;
    here the flattened size comes from the feature map of the given input (the same number whenever
    the side is a multiple of 4, as 56 and 64 are; for other sides the original's formula can
    disagree with its own feature map, and the original then fails at the Linear). The original's
    ``conv_init`` (Xavier-uniform) is defined but never applied, so the weights have PyTorch's default
    initialisation, drawn in the original's construction order. Dropout (rate 0.3 passed) is
    commented out in the original's block, so there is none. BatchNorm momentum is the default 0.1
    everywhere.
    """

    depth: int = 10
    widen_factor: int = 10
    in_planes: int = 16

    @property
    def stage_widths(self) -> tuple[int, int, int, int]:
        p, k = self.in_planes, self.widen_factor
        return (p, p * k, 2 * p * k, 4 * p * k)

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        name = "wide_resnet_imagenet64"
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"{name}: depth must be 6n + 4 with n >= 1; got {self.depth}")
        for field in ("widen_factor", "in_planes"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: {field} must be a positive int; got {value!r}")
        c, h, w = check_input_shape(input_shape, name)
        classes = _check_num_classes(num_classes, name)
        hw = _spatial((h, w), 3, 2, 1, name, "layer2")
        hw = _spatial(hw, 3, 2, 1, name, "layer3")
        hw = _spatial(hw, 7, 7, 0, name, "the 7x7 average pooling")
        return WideResNetImageNet64(self, c, self.stage_widths[3] * hw[0] * hw[1], classes)


# ------------------------------------------------------------------------------- densenet.py


class DenseBottleneck(nn.Module):
    """densenet.py ``Bottleneck``: cat([conv2(relu(bn2(conv1(relu(bn1(x)))))), x], channels)."""

    def __init__(self, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, kernel_size=1)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, kernel_size=3, padding=1)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        return torch.cat([out, x], 1)


class DenseTransition(nn.Module):
    """densenet.py ``Transition``: avg_pool2d(conv(relu(bn(x))), 2)."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(nn.Module):
    def __init__(self, spec: DenseNetSpec, in_ch: int, hw: tuple[int, int], num_classes: int) -> None:
        super().__init__()
        g = spec.growth_rate
        planes = 2 * g
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=3, padding=1)
        for i, count in enumerate(spec.blocks):
            self.add_module(
                f"dense{i + 1}", nn.Sequential(*(DenseBottleneck(planes + j * g, g) for j in range(count)))
            )
            planes += count * g
            if i < len(spec.blocks) - 1:
                out_planes = int(math.floor(planes * spec.reduction))
                self.add_module(f"trans{i + 1}", DenseTransition(planes, out_planes))
                planes = out_planes
        self.num_stages = len(spec.blocks)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(planes * hw[0] * hw[1], 512)
        self.relu_linear = nn.ReLU()
        self.linear2 = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        for i in range(1, self.num_stages):
            out = getattr(self, f"trans{i}")(getattr(self, f"dense{i}")(out))
        out = getattr(self, f"dense{self.num_stages}")(out)
        out = self.flatten(self.relu(self.bn(out)))
        return self.linear2(self.relu_linear(self.linear1(out)))


@dataclass(frozen=True)
class DenseNetSpec(ModelSpec):
    """densenet.py ``DenseNet(Bottleneck, nblocks, growth_rate, reduction=0.5)`` (BN version):
    conv 3×3 (→ 2·growth), dense stages joined by transitions (1×1 conv to ⌊reduction·C⌋, 2×2
    average pooling), BN, ReLU, Flatten, Linear(→ 512), ReLU, Linear(→ classes)."""

    blocks: tuple[int, ...] = (2, 4, 4)
    growth_rate: int = 32
    reduction: float = 0.5

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        c, h, w = check_input_shape(input_shape, "densenet")
        classes = _check_num_classes(num_classes, "densenet")
        hw = (h, w)
        for i in range(len(self.blocks) - 1):
            hw = _spatial(hw, 2, 2, 0, "densenet", f"the pooling of trans{i + 1}")
        return DenseNet(self, c, hw, classes)


# -------------------------------------------------------------------------------- resnext.py


class ResNeXtBlock(nn.Module):
    """resnext.py ``Block`` (as used: BN after conv1 only): relu(conv3(relu(conv2(relu(bn1(conv1(x))))))
    + shortcut(x)); conv2 is the grouped 3×3 conv (groups = cardinality) carrying the stride."""

    expansion = 2

    def __init__(self, in_planes: int, cardinality: int, bottleneck_width: int, stride: int) -> None:
        super().__init__()
        gw = cardinality * bottleneck_width
        self.conv1 = nn.Conv2d(in_planes, gw, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(gw)
        self.conv2 = nn.Conv2d(gw, gw, kernel_size=3, stride=stride, padding=1, groups=cardinality)
        self.conv3 = nn.Conv2d(gw, self.expansion * gw, kernel_size=1)
        self.shortcut = nn.Sequential()  # empty: the identity, and no node in the traced graph
        if stride != 1 or in_planes != self.expansion * gw:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, self.expansion * gw, 1, stride=stride))
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.conv3(self.relu2(self.conv2(out)))
        return self.relu3(out + self.shortcut(x))


class ResNeXt(nn.Module):
    def __init__(self, spec: ResNeXtSpec, in_ch: int, flat: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        in_planes, width = 16, spec.bottleneck_width
        for i, (count, stride) in enumerate(zip(spec.blocks, (1, 2, 2))):
            blocks = []
            for s in [stride] + [1] * (count - 1):
                blocks.append(ResNeXtBlock(in_planes, spec.cardinality, width, s))
                in_planes = ResNeXtBlock.expansion * spec.cardinality * width
            width *= 2  # the bottleneck width doubles after each stage
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(flat, 512)
        self.relu_linear = nn.ReLU()
        self.linear2 = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.conv1(x))
        out = self.flatten(self.layer3(self.layer2(self.layer1(out))))
        return self.linear2(self.relu_linear(self.linear1(out)))


@dataclass(frozen=True)
class ResNeXtSpec(ModelSpec):
    """resnext.py ``ResNeXt(num_blocks, cardinality, bottleneck_width)`` with three stages (strides
    1, 2, 2) and no final pooling: Flatten, Linear(→ 512), ReLU, Linear(→ classes)."""

    blocks: tuple[int, int, int] = (1, 1, 1)
    cardinality: int = 2
    bottleneck_width: int = 32

    def build(self, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
        if len(self.blocks) != 3 or min(self.blocks) < 1:
            raise ValueError(f"resnext: blocks must be three counts >= 1; got {self.blocks}")
        c, h, w = check_input_shape(input_shape, "resnext")
        classes = _check_num_classes(num_classes, "resnext")
        hw = _spatial((h, w), 3, 2, 1, "resnext", "layer2")
        hw = _spatial(hw, 3, 2, 1, "resnext", "layer3")
        out_planes = ResNeXtBlock.expansion * self.cardinality * self.bottleneck_width * 4
        return ResNeXt(self, c, out_planes * hw[0] * hw[1], classes)


# ------------------------------------------------------------------------------------ registry

MODELS: dict[str, ModelSpec] = {
    "mlp_2layer": MLPSpec(hidden=(256,)),
    "mlp_3layer": MLPSpec(hidden=(256, 128)),
    "mlp_5layer": MLPSpec(hidden=(256, 256, 256, 128)),
    "cnn_4layer": CNN4LayerSpec(),
    "cnn_6layer": ConvStackSpec(width=32, linear_size=256, batch_norm=False, num_convs=4),
    "cnn_7layer": ConvStackSpec(width=64, linear_size=512, batch_norm=False),
    "cnn_7layer_bn": ConvStackSpec(width=64, linear_size=512, batch_norm=True),
    "resnet": ResNetSpec(),
    "wide_resnet": WideResNetSpec(depth=10, widen_factor=4, batch_norm=True, pooling=False),
    "wide_resnet_cifar_bn": WideResNetSpec(depth=10, widen_factor=4, batch_norm=True, pooling=True),
    # The original's two constructors differ only in the hard-coded classes (200 / 1000); here the
    # classes come from build(num_classes), so both names hold the same spec.
    "wide_resnet_imagenet64": WideResNetImageNet64Spec(depth=10, widen_factor=10, in_planes=16),
    "wide_resnet_imagenet64_1000class": WideResNetImageNet64Spec(depth=10, widen_factor=10, in_planes=16),
    "densenet": DenseNetSpec(),
    "resnext": ResNeXtSpec(),
}

#: The original's ``Models`` keys (examples/vision/models/__init__.py) whose names differ here.
ALIASES: dict[str, str] = {
    "wide_resnet_cifar_bn_wo_pooling": "wide_resnet",
    "Densenet_cifar_32": "densenet",
    "ResNeXt_cifar": "resnext",
}


def build_model(name_or_spec: str | ModelSpec, input_shape: InputShape, num_classes: int = 10) -> nn.Module:
    """A freshly initialised model of a zoo name (``MODELS`` or ``ALIASES``) or of a spec."""
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec.build(input_shape, num_classes)
    name = ALIASES.get(name_or_spec, name_or_spec)
    if name not in MODELS:
        raise ValueError(
            f"unknown model {name_or_spec!r}; known: {', '.join(sorted(MODELS))} "
            f"(and the original names {', '.join(sorted(ALIASES))})"
        )
    return MODELS[name].build(input_shape, num_classes)
