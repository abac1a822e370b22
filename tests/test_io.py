"""File-level image / mask reading and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ppd.errors import InvalidImageError, InvalidMaskError, OutputError
from ppd.io import atomic_write, check_writable, read_image, read_mask, write_png


def test_formats_convert_to_rgb(tmp_path, manifest):
    rgb = manifest[0].image()
    h, w = rgb.shape[:2]
    grey = rgb.mean(axis=2).astype(np.uint8)
    cases = {
        "grey.png": Image.fromarray(grey),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((h, w), 128, np.uint8)])),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "deep.png": Image.fromarray((grey.astype(np.uint16) * 16 + 100).astype(np.uint16)),  # 12-bit content
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = read_image(tmp_path / name)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8, name
    deep = read_image(tmp_path / "deep.png")
    assert deep.min() == 0 and deep.max() == 255  # stretched, not left nearly black
    assert np.array_equal(read_image(tmp_path / "grey.png")[:, :, 1], grey)


def test_exif_rotation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape[:2] == (40, 20)


def test_unreadable_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    for name in ("empty.jpg", "text.png", "trunc.png", "missing.png"):
        with pytest.raises(InvalidImageError):
            read_image(tmp_path / name)


def test_masks(tmp_path):
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:7] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").sum() == 12
    with pytest.raises(InvalidMaskError, match="is 12x10"):
        read_mask(tmp_path / "m.png", shape=(11, 12))
    soft = (np.arange(120).reshape(10, 12) * 2).astype(np.uint8)
    Image.fromarray(soft).save(tmp_path / "soft.png")
    with pytest.raises(InvalidMaskError, match="not binary"):
        read_mask(tmp_path / "soft.png")
    assert read_mask(tmp_path / "soft.png", threshold=127).sum() == (soft > 127).sum()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "full.png")
    assert read_mask(tmp_path / "empty.png").sum() == 0
    assert read_mask(tmp_path / "full.png").all()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"

    def boom(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert list(tmp_path.iterdir()) == []
    write_png(target, np.ones((3, 3), bool))
    assert np.asarray(Image.open(target)).max() == 255


def test_check_writable(tmp_path):
    with pytest.raises(OutputError):
        check_writable(tmp_path / "no" / "such" / "dir.png")
    with pytest.raises(OutputError):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "ok.png") == tmp_path / "ok.png"


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os
    import stat

    p = write_png(tmp_path / "m.png", np.zeros((2, 2), bool))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
