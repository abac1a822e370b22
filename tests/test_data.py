"""Reading the shared data and user folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ppd import data
from ppd.errors import DataError


def test_manifest_contents(manifest):
    counts: dict[tuple[str, str], int] = {}
    for s in manifest:
        counts[(s.dataset, s.split)] = counts.get((s.dataset, s.split), 0) + 1
    assert counts[("ecssd", "train")] == 250 and counts[("ecssd", "val")] == 50
    assert [counts[("kvasir", sp)] for sp in ("train", "val", "eval")] == [400, 100, 400]
    assert [counts[("ph2", sp)] for sp in ("train", "val", "eval")] == [30, 20, 50]
    assert counts[("ecssd", "eval")] == 200 and counts[("dsb2018", "val")] == 10
    assert counts[("dsb2018", "train")] == 55 and counts[("isbi2012", "train")] == 30
    s = manifest[0]
    assert s.image_path.is_file() and s.mask_path.is_file()
    img, mask = s.image(), s.mask()
    assert img.shape[:2] == mask.shape and mask.dtype == bool and 0 < mask.mean() < 1


def test_filters_and_labels(data_root):
    val = data.load_dataset(data_root, dataset="dsb2018", split="val")
    assert len(val) == 10 and all(s.split == "val" for s in val)
    lab = val[0].labels_path()
    assert lab is not None
    labels = np.asarray(Image.open(lab))
    assert labels.max() >= 1 and np.array_equal(labels > 0, val[0].mask())


def test_verify_against_sha256sums(manifest, data_root):
    files = [str(s.image_path.relative_to(data_root)) for s in manifest[:5]]
    files += [str(s.mask_path.relative_to(data_root)) for s in manifest[:5]]
    assert data.verify(data_root, files) == 10


def test_verify_detects_corruption(tmp_path, manifest, data_root):
    s = manifest[0]
    rel = s.image_path.relative_to(data_root)
    (tmp_path / rel.parent).mkdir(parents=True)
    raw = bytearray(s.image_path.read_bytes())
    raw[100] ^= 1
    (tmp_path / rel).write_bytes(bytes(raw))
    digest = next(d for d, n in data.iter_checksums(data_root) if n == str(rel))
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  {rel}\n")
    with pytest.raises(DataError, match="does not match"):
        data.verify(tmp_path)


def test_user_folder(tmp_path, manifest):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for s in manifest[:3]:
        (tmp_path / "images" / f"{s.id}.jpg").write_bytes(s.image_path.read_bytes())
        (tmp_path / "masks" / f"{s.id}.png").write_bytes(s.mask_path.read_bytes())
    samples = data.load_dataset(tmp_path)
    assert [s.id for s in samples] == sorted(s.id for s in manifest[:3])
    assert all(s.split == "eval" for s in samples)
    assert samples[0].image().shape[:2] == samples[0].mask().shape
    (tmp_path / "images" / "extra.jpg").write_bytes(manifest[3].image_path.read_bytes())
    with pytest.raises(DataError, match="no mask"):
        data.load_dataset(tmp_path)


def test_manifest_without_split_counts_as_eval(tmp_path, manifest, data_root):
    s = manifest[0]
    (tmp_path / "manifest.csv").write_text(
        f"dataset,id,image,mask\nmine,{s.id},{s.image_path},{s.mask_path}\n")
    rows = data.read_manifest(tmp_path)
    assert rows[0].split == "eval" and rows[0].image().shape[:2] == rows[0].mask().shape
    (tmp_path / "manifest.csv").write_text("dataset,id\nx,y\n")
    with pytest.raises(DataError, match="lacks"):
        data.read_manifest(tmp_path)
