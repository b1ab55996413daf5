"""The image reader, the scan and the readability check on awkward files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hdkd_data_fixtures import write_image
from PIL import Image

from hdkd_lightning.data.io import ImageReadError, check_image, iter_files, load_rgb, scan_images


def test_grayscale_rgba_palette_16bit_become_rgb(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(gray)
    out = load_rgb(gray)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and (out == 77).all()

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255  # opaque
    rgba[0, 1, 3] = 0  # transparent -> black (documented choice)
    rgba[1, :, 3] = 128
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200] * 3 and out[0, 1].tolist() == [0] * 3
    assert out[1, 0].tolist() == [100] * 3

    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8)).convert("P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert load_rgb(tmp_path / "p.png")[0, 0].tolist() == [255, 0, 0]
    pal.info["transparency"] = 1
    pal.save(tmp_path / "pt.png", transparency=1)
    assert load_rgb(tmp_path / "pt.png")[0, 1].tolist() == [0, 0, 0]

    deep = np.array([[0, 1000], [2000, 4000]], np.uint16)  # 12-bit data in 16 bits
    Image.fromarray(deep).save(tmp_path / "d.png")
    out = load_rgb(tmp_path / "d.png")
    assert out[0, 0].tolist() == [0] * 3 and out[1, 1].tolist() == [255] * 3
    assert 60 <= out[0, 1, 0] <= 68  # min-max scaled, not clipped at 255


def test_cmyk_jpeg_and_wrong_extension_and_odd_names(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 220
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    out = load_rgb(tmp_path / "cmyk.jpg")
    assert out.shape == (16, 16, 3)
    assert abs(int(out[8, 8, 0]) - 220) < 12 and out[8, 8, 1] < 20 and out[8, 8, 2] < 20

    png_named_jpg = tmp_path / "really_a_png.jpg"
    Image.fromarray(rgb).save(png_named_jpg, format="PNG")
    assert check_image(png_named_jpg)["ok"] and check_image(png_named_jpg)["format"] == "PNG"
    assert (load_rgb(png_named_jpg) == rgb).all()

    odd = write_image(tmp_path / "dossier à part" / "lésion n°1 copy.jpg")
    assert load_rgb(odd).shape == (16, 20, 3)
    assert check_image(odd)["ok"]


def test_decompression_bomb_guard_names_file_size_and_limit(tmp_path):
    big = write_image(tmp_path / "big.png", size=(300, 200))
    # the key itself is named by the caller's fix (data.max_image_pixels or max_image_pixels)
    with pytest.raises(ImageReadError, match=r"big\.png: 300x200 = 60,000 pixels exceeds the limit of 50,000"):
        load_rgb(big, max_pixels=50_000)
    info = check_image(big, max_pixels=50_000)
    assert not info["ok"] and "exceeds the limit of 50,000 pixels" in info["error"]
    assert load_rgb(big, max_pixels=None).shape == (200, 300, 3)


def test_check_catches_truncated_and_fake_files(tmp_path):
    good = write_image(tmp_path / "good.jpg", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "trailing.jpg").write_bytes(data + b"\x00" * 100)  # junk after EOI is fine
    png = write_image(tmp_path / "good.png", size=(64, 64))
    (tmp_path / "trunc.png").write_bytes(png.read_bytes()[:-30])
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert check_image(good)["ok"] and check_image(tmp_path / "trailing.jpg")["ok"]
    for name in ("trunc.jpg", "trunc.png", "text.jpg", "empty.jpg"):
        info = check_image(tmp_path / name)
        assert not info["ok"] and info["error"], name
    with pytest.raises(ImageReadError, match="trunc.jpg"):
        load_rgb(tmp_path / "trunc.jpg")


def test_scan_ignores_hidden_survives_symlink_loop(tmp_path):
    write_image(tmp_path / "a" / "x.jpg")
    write_image(tmp_path / "a" / "b" / "y.png")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00\x01")
    write_image(tmp_path / "a" / ".ipynb_checkpoints" / "x-checkpoint.jpg")
    (tmp_path / "a" / "notes.txt").write_text("hello")
    png_no_ext = tmp_path / "a" / "scan_0001"
    write_image(png_no_ext.with_suffix(".png")).rename(png_no_ext)
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a/b/loop -> a
    images, ignored = scan_images(tmp_path / "a")
    names = sorted(p.name for p in images)
    assert names == ["scan_0001", "x.jpg", "y.png"]  # each file once, sniffed by content
    assert [p.name for p in ignored] == ["notes.txt"]
    assert len(list(iter_files(tmp_path))) == 4
