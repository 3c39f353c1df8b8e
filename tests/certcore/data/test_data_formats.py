"""The format readers and writers: IDX (plain and .gz), CIFAR pickle batches, image files."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from certcore.data import DatasetFormatError
from certcore.data.formats import (
    read_cifar_batch,
    read_idx,
    read_image,
    write_cifar_batch,
    write_idx,
    write_image,
)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip_images_and_labels(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / f"img{suffix}", images)
    write_idx(tmp_path / f"lab{suffix}", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / f"img{suffix}"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"lab{suffix}"), labels)


def test_idx_header_is_the_official_one(tmp_path):
    write_idx(tmp_path / "img", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "lab.gz", np.zeros((2,), np.uint8))
    raw = (tmp_path / "img").read_bytes()
    assert struct.unpack(">IIII", raw[:16]) == (2051, 2, 28, 28)  # magic 0x00000803
    lab = gzip.decompress((tmp_path / "lab.gz").read_bytes())
    assert struct.unpack(">II", lab[:8]) == (2049, 2)  # magic 0x00000801
    assert len(raw) == 16 + 2 * 28 * 28


def test_idx_reads_wider_big_endian_types(tmp_path):
    values = np.array([[1, -2], [300, 70000]], dtype=">i4")
    (tmp_path / "x").write_bytes(bytes([0, 0, 0x0C, 2]) + struct.pack(">II", 2, 2) + values.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), values.astype(np.int32))


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "bad magic"),
        (b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic"),
        (bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 28, 28) + b"\x00" * 10, "shape (2, 28, 28)"),
        (bytes([0, 0, 8, 3]) + b"\x00\x00", "header truncated"),
    ],
)
def test_idx_bad_files_raise_format_error(tmp_path, content, needle):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(DatasetFormatError) as info:
        read_idx(path)
    assert needle in str(info.value)


def test_idx_bad_gzip_raises_format_error(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetFormatError, match="cannot read IDX"):
        read_idx(path)


def test_cifar_batch_roundtrip_layout(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(tmp_path / "data_batch_1", images, [0, 9, 2, 3])
    x, y = read_cifar_batch(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, [0, 9, 2, 3])
    # The file layout is the documented one: each row is 1024 red, then 1024 green, then 1024 blue values.
    with open(tmp_path / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="latin1")["data"][1]
    np.testing.assert_array_equal(row[1024:2048].reshape(32, 32), images[1, 1])


def test_cifar_batch_with_bytes_keys(tmp_path):
    """Python-2 pickles loaded with encoding='bytes' have bytes keys; the reader accepts both."""
    images = np.zeros((2, 3072), np.uint8)
    with open(tmp_path / "b", "wb") as f:
        pickle.dump({b"data": images, b"labels": [1, 2]}, f, protocol=2)
    x, y = read_cifar_batch(tmp_path / "b")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [1, 2]


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}, "shape (N, 3072)"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "must be uint8"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "2 images but 1 labels"),
        ({"images": np.zeros((2, 3072), np.uint8)}, "needs keys 'data' and 'labels'"),
    ],
)
def test_cifar_bad_batches(tmp_path, entry, needle):
    with open(tmp_path / "b", "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(DatasetFormatError) as info:
        read_cifar_batch(tmp_path / "b")
    assert needle in str(info.value)


def test_cifar_not_a_pickle(tmp_path):
    (tmp_path / "b").write_bytes(b"\x00garbage")
    with pytest.raises(DatasetFormatError, match="cannot unpickle"):
        read_cifar_batch(tmp_path / "b")


def test_image_roundtrip_png_exact_and_jpeg_close(tmp_path):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8)
    write_image(tmp_path / "a.png", img)
    assert torch.equal(read_image(tmp_path / "a.png"), torch.from_numpy(img))
    smooth = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8), (3, 64, 64)).copy()
    write_image(tmp_path / "a.JPEG", smooth)
    back = read_image(tmp_path / "a.JPEG")
    assert back.shape == (3, 64, 64) and back.dtype == torch.uint8
    assert (back.int() - torch.from_numpy(smooth).int()).abs().float().mean() < 3


def test_grayscale_image_becomes_rgb(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((64, 64), 77, np.uint8), mode="L").save(tmp_path / "g.JPEG")
    img = read_image(tmp_path / "g.JPEG")
    assert img.shape == (3, 64, 64) and (img.int() - 77).abs().max() <= 1


def test_unreadable_image(tmp_path):
    (tmp_path / "x.JPEG").write_bytes(b"nope")
    with pytest.raises(DatasetFormatError, match="cannot decode image"):
        read_image(tmp_path / "x.JPEG")
