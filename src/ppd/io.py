"""Reading images and masks, and writing outputs without leaving half-written files.

ppd's arrays follow SAM's conventions: images are ``HxWx3`` ``uint8`` RGB, masks
are ``HxW`` ``bool``. Files in other formats (greyscale, RGBA, palette, 16-bit,
EXIF-rotated) are converted here, once, at the edge; the array-level API is
strict so that silent conversions never hide a bug.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ppd.errors import InvalidImageError, InvalidMaskError, OutputError

#: Largest image (in pixels) ppd reads: 150 Mpx is ~450 MB as RGB uint8.
MAX_PIXELS = 150_000_000
_UMASK = os.umask(0)
os.umask(_UMASK)


def _open(path: str | os.PathLike, what: str, error: type[Exception]) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise error(f"{what} {path} is {w}x{h} px, above ppd's limit of {MAX_PIXELS:,} px")
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, error):
            raise
        raise error(f"cannot read {what} {path}: {e}") from None
    return im


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Linearly map a high-bit-depth array's [min, max] onto [0, 255]."""
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_rgb(im: Image.Image) -> np.ndarray:
    """Convert any PIL image to ``HxWx3 uint8`` RGB.

    EXIF orientation is applied; alpha is dropped; 16-bit and float images are
    stretched linearly from their own [min, max] to [0, 255] (microscopy often
    uses 12 of 16 bits, so a fixed ``/257`` would leave such images nearly black).
    """
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _stretch_to_uint8(np.asarray(im))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def stored_size(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """(H, W) of an image file as :func:`read_image` / :func:`read_mask` would return it,
    without converting pixels (EXIF rotations by 90 degrees swap the sides)."""
    err = InvalidImageError if what == "image" else InvalidMaskError
    im = _open(path, what, err)
    w, h = im.size
    try:
        turned = im.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # a broken EXIF block: read_image would ignore it too
        turned = False
    return (w, h) if turned else (h, w)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``HxWx3 uint8`` RGB (see :func:`to_rgb` for conversions)."""
    im = _open(path, "image", InvalidImageError)
    rgb = to_rgb(im)
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InvalidImageError(f"image {path} is empty")
    return rgb


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None,
              threshold: float | None = None) -> np.ndarray:
    """Read a binary mask file as ``HxW bool`` (foreground = non-zero).

    A mask must have at most two grey levels (e.g. {0, 255} or {0, 1}); a mask with
    more (a JPEG-compressed mask, a soft mask) raises unless ``threshold`` is given,
    in which case foreground = grey > threshold. ``shape`` (H, W) is checked if given.
    """
    im = _open(path, "mask", InvalidMaskError)
    im = ImageOps.exif_transpose(im)
    arr = np.asarray(im)
    if arr.ndim == 3:
        arr = np.asarray(im.convert("L"))
    values = np.unique(arr)
    if threshold is not None:
        mask = arr > threshold
    elif len(values) <= 2:
        mask = arr > 0 if len(values) == 1 else arr == values.max()
        if len(values) == 2 and values.min() != 0:
            raise InvalidMaskError(f"mask {path} has levels {values.tolist()}; background must be 0")
    else:
        raise InvalidMaskError(
            f"mask {path} is not binary ({len(values)} grey levels); give a threshold to binarise it")
    if shape is not None and mask.shape != tuple(shape):
        raise InvalidMaskError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}")
    return mask


def check_image_array(image: np.ndarray) -> np.ndarray:
    """Validate an in-memory image: ``HxWx3 uint8``. Returns it C-contiguous."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidImageError(
            f"image must be uint8 RGB, got dtype {image.dtype} (use ppd.io.read_image or ppd.io.to_rgb)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(
            f"image must have shape HxWx3 (RGB), got {image.shape} (use ppd.io.to_rgb to convert)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidImageError(f"image is empty: shape {image.shape}")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise InvalidImageError(f"image of {image.shape[1]}x{image.shape[0]} px is above {MAX_PIXELS:,} px")
    return np.ascontiguousarray(image)


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any expensive work) if ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"output path is a directory: {path}")
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory is not writable: {parent}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"output file is not writable: {path}")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    Readers see either the old file or the complete new one, never a partial write,
    and an exception (or a kill) leaves at most a stray ``.tmp`` file, never ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a ``bool`` mask (as 0/255) or a ``uint8`` image to PNG, atomically."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    im = Image.fromarray(array)
    return atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))
