"""Batched tensor augmentation: crop (edge / zero padding), flip, centre crop, normalize."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision import transforms as T

from certcore.data import Augmentation, BatchTransform, Normalization, center_crop, random_crop, random_hflip
from certcore.data.transforms import crop_at, denormalize, normalize, to_float01


def _batch(n=4, c=3, h=8, w=8, dtype=torch.uint8):
    x = torch.arange(n * c * h * w).reshape(n, c, h, w) % 251
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("mode", ["edge", "constant"])
def test_crop_at_matches_torchvision_pad_then_crop(dtype, mode):
    x = _batch(dtype=dtype)
    padding, size = 3, (8, 8)
    tv_mode = "edge" if mode == "edge" else "constant"
    for top in range(0, 2 * padding + 1):
        for left in (0, 2, 2 * padding):
            got = crop_at(x, torch.full((4,), top), torch.full((4,), left), size, padding, mode)
            padded = TF.pad(x, [padding], padding_mode=tv_mode, fill=0)
            want = TF.crop(padded, top, left, *size)
            assert torch.equal(got, want), (top, left)
            assert got.dtype == dtype


def test_edge_padding_replicates_border_pixels():
    x = _batch(n=1, c=1, h=5, w=5, dtype=torch.float32)
    out = crop_at(x, torch.tensor([0]), torch.tensor([0]), (5, 5), 2, "edge")
    assert torch.equal(out[0, 0, :3, :3], x[0, 0, 0, 0].expand(3, 3))  # corner pixel fills the corner pad
    assert torch.equal(out[0, 0, 2, 2:], x[0, 0, 0, :3])
    assert torch.equal(out, F.pad(x, (2, 2, 2, 2), mode="replicate")[..., :5, :5])
    zero = crop_at(x, torch.tensor([0]), torch.tensor([0]), (5, 5), 2, "constant")
    assert zero[0, 0, :2].abs().sum() == 0 and zero[0, 0, :, :2].abs().sum() == 0


def test_random_crop_keeps_shape_covers_all_offsets_and_is_seeded():
    x = torch.zeros(2000, 1, 4, 4)
    x[:, :, 0, 0] = 1.0  # track where the top-left pixel lands
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, padding=2, padding_mode="constant", generator=g)
    assert out.shape == x.shape
    # Offsets 0..4 in each axis: the pixel lands at (2 - top, 2 - left) when inside the crop, so exactly the
    # 3x3 top-left positions occur (top or left of 3, 4 crops it out; zero padding adds no other ones).
    flat = out[:, 0].flatten(1)
    inside = flat.max(1).values > 0
    assert set(flat[inside].argmax(1).tolist()) == {r * 4 + c for r in range(3) for c in range(3)}
    assert 0 < (~inside).sum() < 2000
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(random_crop(x, padding=1, generator=g1), random_crop(x, padding=1, generator=g2))
    torch.manual_seed(3)
    a = random_crop(x, padding=1)
    torch.manual_seed(3)
    assert torch.equal(a, random_crop(x, padding=1))


def test_random_crop_offsets_are_uniform_over_the_padded_range():
    n, p = 4000, 3
    x = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8).expand(n, 1, 1, 8).contiguous()
    out = random_crop(x, padding=p, generator=torch.Generator().manual_seed(1))
    # With edge padding the first output column is clamp(left - p, 0, 7): values 0..3 (left = 0..6).
    first = out[:, 0, 0, 0]
    counts = torch.bincount(first.long(), minlength=8)
    assert counts[0] > counts[1] * 2  # left 0..3 all clamp to column 0: ~4/7 of the draws
    assert counts[4:].sum() == 0
    assert set(first.unique().long().tolist()) == {0, 1, 2, 3}


def test_random_crop_smaller_size_without_padding():
    x = _batch(n=3, h=64, w=64)
    out = random_crop(x, size=56, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 56, 56)
    with pytest.raises(ValueError, match="larger than the padded image"):
        random_crop(x, size=80)


def test_random_hflip():
    x = _batch(n=64, dtype=torch.float32)
    out = random_hflip(x, generator=torch.Generator().manual_seed(0))
    flipped = [(o == xi.flip(-1)).all().item() for o, xi in zip(out, x)]
    same = [(o == xi).all().item() for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 10 < sum(flipped) < 54
    assert torch.equal(random_hflip(x, p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, p=0.0), x)


def test_center_crop_matches_torchvision():
    x = _batch(n=2, h=64, w=64)
    assert torch.equal(center_crop(x, 56), T.CenterCrop(56)(x))
    assert torch.equal(center_crop(x, 56), x[..., 4:60, 4:60])
    odd = _batch(n=1, h=9, w=9)
    assert torch.equal(center_crop(odd, 4), T.CenterCrop(4)(odd))


def test_normalize_roundtrip_and_to_float01():
    norm = Normalization((0.4914, 0.4822, 0.4465), (0.2009,))
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(denormalize(normalize(x, norm), norm), x, atol=1e-6)
    assert torch.allclose(normalize(x, norm)[:, 1], (x[:, 1] - 0.4822) / 0.2009)
    u = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 1, 1, 3)
    assert torch.allclose(to_float01(u), torch.tensor([0.0, 1.0, 128 / 255]).view(1, 1, 1, 3))
    with pytest.raises(ValueError, match="uint8 pixels or float"):
        to_float01(torch.zeros(1, 1, 1, 1, dtype=torch.int32))


def test_batch_transform_matches_totensor_normalize():
    norm = Normalization((0.1307,), (0.3081,))
    x = _batch(n=3, c=1, h=28, w=28)
    out = BatchTransform(norm, None)(x)
    want = T.Normalize((0.1307,), (0.3081,))(x.float() / 255)
    assert out.dtype == torch.float32 and torch.allclose(out, want)


def test_batch_transform_train_vs_eval():
    aug = Augmentation(random_crop=True, padding=4, padding_mode="edge", hflip=True)
    norm = Normalization()
    x = _batch(n=16, h=32, w=32)
    train, test = BatchTransform(norm, aug, train=True), BatchTransform(norm, aug, train=False)
    assert torch.equal(test(x), x.float() / 255)
    a = train(x, generator=torch.Generator().manual_seed(5))
    b = train(x, generator=torch.Generator().manual_seed(5))
    assert a.shape == (16, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, test(x))
    crop = Augmentation(random_crop=True, hflip=True, crop_size=56)
    big = _batch(n=2, h=64, w=64)
    assert torch.equal(BatchTransform(norm, crop, train=False)(big), big[..., 4:60, 4:60].float() / 255)
    assert BatchTransform(norm, crop, train=True)(big).shape == (2, 3, 56, 56)


def test_bad_batch_shape():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_crop(torch.zeros(3, 8, 8), padding=1)


@pytest.mark.cuda
def test_augmentation_on_gpu_matches_cpu():
    x = _batch(n=32, h=32, w=32)
    top, left = torch.randint(0, 7, (32,)), torch.randint(0, 7, (32,))
    for mode in ("edge", "constant"):
        cpu = crop_at(x, top, left, (32, 32), 3, mode)
        gpu = crop_at(x.cuda(), top.cuda(), left.cuda(), (32, 32), 3, mode)
        assert torch.equal(cpu, gpu.cpu())
    aug = Augmentation(random_crop=True, padding=3, hflip=True)
    out = BatchTransform(Normalization((0.5,), (0.2,)), aug)(
        x.cuda(), generator=torch.Generator("cuda").manual_seed(0)
    )
    assert out.is_cuda and out.shape == (32, 3, 32, 32)
