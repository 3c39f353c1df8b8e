"""Tiny random models covering every layer IBP supports, for soundness tests of any certifier.

    >>> for name in ZOO:
    ...     model, input_shape = make_zoo_model(name, dtype=torch.float64, seed=0)
    ...     x = torch.rand(4, *input_shape, dtype=torch.float64)

BatchNorm layers get random running statistics and affine parameters, so that eval mode is not the
identity. Models are returned in eval mode; call ``.train()`` to test train-mode BatchNorm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from certcore.bounds import Residual

__all__ = ["ZOO", "make_zoo_model", "randomize_batchnorm", "tiny_cnn", "tiny_mlp", "tiny_resnet"]


def randomize_batchnorm(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Random running statistics (mean ~ N(0, 0.5²), var ~ U(0.5, 2)) and affine parameters
    (weight ~ ±U(0.5, 1.5), bias ~ N(0, 0.5²)) for every BatchNorm in ``model``, in place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features

                def rnd(*shape):
                    return torch.rand(*shape, generator=generator)

                if m.running_mean is not None:
                    m.running_mean.copy_(0.5 * torch.randn(n, generator=generator))
                    m.running_var.copy_(0.5 + 1.5 * rnd(n))
                if m.weight is not None:
                    sign = torch.where(rnd(n) < 0.2, -1.0, 1.0)
                    m.weight.copy_(sign * (0.5 + rnd(n)))
                    m.bias.copy_(0.5 * torch.randn(n, generator=generator))
    return model


def tiny_mlp(
    in_features: int = 6,
    hidden: tuple[int, ...] = (8, 8),
    out_features: int = 3,
    *,
    activation: Callable[[], nn.Module] = nn.ReLU,
    batchnorm: bool = False,
) -> nn.Sequential:
    """``Flatten → [Linear → (BatchNorm1d) → act] × len(hidden) → Linear``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(activation())
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def tiny_cnn(
    in_channels: int = 2,
    size: int = 6,
    out_features: int = 3,
    *,
    channels: tuple[int, ...] = (4, 4),
    conv: dict | None = None,
    activation: Callable[[], nn.Module] = nn.ReLU,
    batchnorm: bool = False,
    pool: str | None = None,
) -> nn.Sequential:
    """``[Conv2d(**conv) → (BatchNorm2d) → act] × len(channels) → (pool) → Flatten → Linear``.

    ``conv`` sets kernel_size/stride/padding/dilation/groups/padding_mode (default 3, 1, 1, 1, 1);
    ``pool``: ``"avg"`` (AvgPool2d(2, ceil_mode=True)), ``"max"`` (MaxPool2d(2, padding=1)) or None.
    """
    kw = {"kernel_size": 3, "stride": 1, "padding": 1, **(conv or {})}
    layers: list[nn.Module] = []
    c = in_channels
    for i, co in enumerate(channels):
        layer_kw = dict(kw)
        if i == 0 and c % layer_kw.get("groups", 1):
            layer_kw["groups"] = 1
        layers.append(nn.Conv2d(c, co, **layer_kw))
        if batchnorm:
            layers.append(nn.BatchNorm2d(co))
        layers.append(activation())
        c = co
    if pool == "avg":
        layers.append(nn.AvgPool2d(2, ceil_mode=True))
    elif pool == "max":
        layers.append(nn.MaxPool2d(2, padding=1))
    elif pool is not None:
        raise ValueError(f"pool must be 'avg', 'max' or None, got {pool!r}")
    layers.append(nn.Flatten())
    body = nn.Sequential(*layers)
    with torch.no_grad():
        n = body(torch.zeros(1, in_channels, size, size)).shape[1]
    return nn.Sequential(*layers, nn.Linear(n, out_features))


def tiny_resnet(in_channels: int = 2, size: int = 6, width: int = 4, out_features: int = 3) -> nn.Sequential:
    """Conv stem, an identity-shortcut block and a strided block with a 1x1-conv shortcut, all with BN."""

    def cbr(ci, co, stride=1):
        return [nn.Conv2d(ci, co, 3, stride, 1), nn.BatchNorm2d(co)]

    stem = nn.Sequential(*cbr(in_channels, width), nn.ReLU())
    block1 = nn.Sequential(
        Residual(nn.Sequential(*cbr(width, width), nn.ReLU(), *cbr(width, width))), nn.ReLU()
    )
    shortcut = nn.Sequential(nn.Conv2d(width, 2 * width, 1, 2), nn.BatchNorm2d(2 * width))
    block2 = nn.Sequential(
        Residual(nn.Sequential(*cbr(width, 2 * width, 2), nn.ReLU(), *cbr(2 * width, 2 * width)), shortcut),
        nn.ReLU(),
    )
    half = (size + 1) // 2
    head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * half * half, out_features))
    return nn.Sequential(stem, block1, block2, head)


# name -> (builder, per-sample input shape)
ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp-relu": (lambda: tiny_mlp(), (6,)),
    "mlp-leakyrelu": (lambda: tiny_mlp(activation=lambda: nn.LeakyReLU(0.1)), (6,)),
    "mlp-tanh": (lambda: tiny_mlp(activation=nn.Tanh), (6,)),
    "mlp-sigmoid": (lambda: tiny_mlp(activation=nn.Sigmoid), (6,)),
    "mlp-bn": (lambda: tiny_mlp(batchnorm=True), (6,)),
    "cnn-stride-pad": (lambda: tiny_cnn(conv={"stride": 2, "padding": 2}), (2, 6, 6)),
    "cnn-groups-dilation": (
        lambda: tiny_cnn(conv={"groups": 2, "dilation": 2, "padding": 2}, activation=nn.Tanh),
        (2, 6, 6),
    ),
    "cnn-reflect": (
        lambda: tiny_cnn(size=5, conv={"padding_mode": "reflect"}, activation=nn.Sigmoid),
        (2, 5, 5),
    ),
    "cnn-bn-avgpool": (lambda: tiny_cnn(size=5, batchnorm=True, pool="avg"), (2, 5, 5)),
    "cnn-maxpool": (lambda: tiny_cnn(pool="max", activation=lambda: nn.LeakyReLU(0.2)), (2, 6, 6)),
    "resnet": (lambda: tiny_resnet(), (2, 6, 6)),
}


def make_zoo_model(
    name: str, *, dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[nn.Module, tuple[int, ...]]:
    """Build zoo model ``name`` with seeded random weights (and BatchNorm statistics), in eval mode."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; choose from {sorted(ZOO)}")
    builder, shape = ZOO[name]
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder()
    randomize_batchnorm(model, gen)
    return model.to(dtype).eval(), shape
