"""Datasets in the shared layout: a ``manifest.csv`` of image / mask pairs.

``../shared/data`` (relative to the repository root) holds the project's data:
``<dataset>/images/<id>.jpg``, ``<dataset>/masks/<id>.png`` and a ``manifest.csv``
with at least the columns ``dataset, id, image, mask`` (``split`` optional: rows
without one count as ``eval``). ``SHA256SUMS`` verifies the files. A user's own
folder of ``images/`` + ``masks/`` (matched by file stem) loads the same way.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppd.errors import DataError, PPDError
from ppd.io import file_sha256, read_image, read_mask

#: Where the project's shared data sit, relative to the working directory (the repository root):
#: resolved when used, never from where the package happens to be installed.
DEFAULT_ROOT = Path("..") / "shared" / "data"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
REQUIRED = ("dataset", "id", "image", "mask")


def default_root() -> Path:
    """``$PPD_DATA`` if set, else ``../shared/data`` from the working directory (as the README's commands
    run it: from the repository root), as an absolute path."""
    env = os.environ.get("PPD_DATA")
    return Path(env) if env else DEFAULT_ROOT.resolve()


@dataclass(frozen=True)
class Sample:
    """One image / mask pair of a dataset."""

    dataset: str
    id: str
    split: str
    image_path: Path
    mask_path: Path
    root: Path

    def image(self) -> np.ndarray:
        return read_image(self.image_path)

    def mask(self) -> np.ndarray:
        return read_mask(self.mask_path)

    def labels_path(self) -> Path | None:
        """Instance labels (dsb2018: ``labels/<id>.png``), if the dataset has them."""
        p = self.root / self.dataset / "labels" / f"{self.id}.png"
        return p if p.is_file() else None


@dataclass(frozen=True, eq=False)
class ArraySample:
    """An image / mask pair held in memory (a one-shot reference's views for test-time adaptation,
    :mod:`ppd.train.adapt`): what the game reads of a :class:`Sample`, without files."""

    dataset: str
    id: str
    pixels: np.ndarray
    mask_array: np.ndarray
    split: str = "reference"

    def image(self) -> np.ndarray:
        return self.pixels

    def mask(self) -> np.ndarray:
        return self.mask_array

    def labels_path(self) -> None:
        return None


def read_manifest(root: str | os.PathLike | None = None) -> list[Sample]:
    """All rows of ``root/manifest.csv`` as :class:`Sample` (paths resolved under ``root``)."""
    root = Path(root) if root is not None else default_root()
    path = root / "manifest.csv"
    if not path.is_file():
        raise DataError(f"no manifest.csv in {root}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} lacks column(s) {', '.join(missing)}")
        rows = list(reader)
    return [Sample(dataset=r["dataset"], id=r["id"], split=(r.get("split") or "eval"),
                   image_path=root / r["image"], mask_path=root / r["mask"], root=root) for r in rows]


def load_folder(folder: str | os.PathLike, dataset: str | None = None) -> list[Sample]:
    """A user's ``folder/images/*`` + ``folder/masks/*`` pairs, matched by file stem (split ``eval``)."""
    folder = Path(folder)
    img_dir, mask_dir = folder / "images", folder / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise DataError(f"{folder} must contain images/ and masks/ folders")
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
    out = []
    for p in sorted(img_dir.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS:
            continue
        if p.stem not in masks:
            raise DataError(f"image {p.name} has no mask in {mask_dir}")
        out.append(Sample(dataset=dataset or folder.name, id=p.stem, split="eval",
                          image_path=p, mask_path=masks[p.stem], root=folder))
    if not out:
        raise DataError(f"no images in {img_dir}")
    return out


def load_dataset(root: str | os.PathLike | None = None, dataset: str | None = None,
                 split: str | Iterable[str] | None = None) -> list[Sample]:
    """Samples of a manifest root or of a plain images/ + masks/ folder, filtered."""
    root = Path(root) if root is not None else default_root()
    if (root / "manifest.csv").is_file():
        samples = read_manifest(root)
    else:
        samples = load_folder(root)
    if dataset is not None:
        samples = [s for s in samples if s.dataset == dataset]
    if split is not None:
        splits = {split} if isinstance(split, str) else set(split)
        samples = [s for s in samples if s.split in splits]
    return samples


def check_training_pairs(samples: list[Sample]) -> None:
    """Every image readable with a mask of its size and some foreground (a DataError naming the file
    otherwise): checked before minutes of embedding are spent."""
    from ppd.io import stored_size

    for s in samples:
        try:
            size = stored_size(s.image_path, "image")
            if not read_mask(s.mask_path, shape=size).any():
                raise DataError(f"{s.mask_path}: the mask is empty (no object to train on)")
        except PPDError as e:
            raise DataError(f"training pair {s.dataset}/{s.id}: {e}") from None


def iter_checksums(root: Path) -> Iterator[tuple[str, str]]:
    path = root / "SHA256SUMS"
    if not path.is_file():
        raise DataError(f"no SHA256SUMS in {root}")
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            yield digest, name.lstrip("*")


def verify(root: str | os.PathLike | None = None, files: Iterable[str] | None = None) -> int:
    """Check files against ``SHA256SUMS`` (all, or only ``files`` relative to root).

    Returns the number of files checked; raises :class:`DataError` on the first
    missing or mismatching file.
    """
    root = Path(root) if root is not None else default_root()
    wanted = set(files) if files is not None else None
    n = 0
    for digest, name in iter_checksums(root):
        if wanted is not None and name not in wanted:
            continue
        p = root / name
        if not p.is_file():
            raise DataError(f"{p} listed in SHA256SUMS is missing")
        if file_sha256(p) != digest:
            raise DataError(f"{p} does not match SHA256SUMS (corrupt or modified)")
        n += 1
    if wanted is not None and n != len(wanted):
        raise DataError(f"{len(wanted) - n} file(s) not listed in SHA256SUMS")
    return n
