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

from ppd.errors import InvalidImageError, InvalidMaskError, InvalidPromptError, OutputError

#: Largest image (in pixels) ppd reads: 150 Mpx is ~450 MB as RGB uint8.
MAX_PIXELS = 150_000_000
#: SAM's input side: images are resized so that their long side is this long.
SAM_INPUT = 1024
_UMASK = os.umask(0)
os.umask(_UMASK)


def _open(path: str | os.PathLike, what: str, error: type[Exception]) -> Image.Image:
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file")
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
    """SHA-256 hex digest of a file (streamed)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
    try:
        return check_image_array(rgb)
    except InvalidImageError as e:
        raise InvalidImageError(f"image {path}: {e}") from None


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
            f"mask {path} is not binary ({len(values)} grey levels); binarise it with --mask-threshold T "
            f"(API: threshold=T): foreground = grey level > T")
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
    h, w = image.shape[:2]
    if h * w > MAX_PIXELS:
        raise InvalidImageError(f"image of {w}x{h} px is above {MAX_PIXELS:,} px")
    if min(h, w) * SAM_INPUT / max(h, w) < 0.5:  # SAM's resize would round the short side to 0 px
        raise InvalidImageError(f"image of {w}x{h} px is too elongated for SAM: its short side would be 0 px at "
                                f"SAM's {SAM_INPUT}-px input (the long side may be at most "
                                f"{2 * SAM_INPUT}x the short one)")
    return np.ascontiguousarray(image)


def _probe_dir(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only reliable writability test (root passes
    every ``os.access`` check, yet cannot write under /proc)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ppd-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputError(f"cannot write in {folder}: {e.strerror or e}") from None


def _no_dangling_link(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise OutputError(f"output path {path} is a broken symbolic link or a link loop")


def check_points(points, labels, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, 2) x, y points inside [0, W) x [0, H) and (N,) labels in {0, 1}
    (``size`` = (H, W); None checks shapes, labels and finiteness only).

    An (N, 3) array is read as (x, y, label) rows, but only when ``labels`` is None: with a
    separate ``labels`` it is ambiguous and refused. Nothing else is reshaped: a flat list of
    numbers is an error, never silently paired up.
    """
    if points is None:
        pts = np.zeros((0, 2))
    else:
        try:
            pts = np.asarray(points, dtype=np.float64)
        except (ValueError, TypeError):
            raise InvalidPromptError(f"points must be an (N, 2) array of x, y, got {_shape_of(points)}") from None
        if pts.ndim == 2 and pts.shape[1] == 3 and labels is None:
            pts, labels = pts[:, :2], pts[:, 2]
        elif pts.ndim != 2 or pts.shape[1] != 2:
            hint = (" (rows of x, y, label are accepted only without separate labels)"
                    if pts.ndim == 2 and pts.shape[1] == 3 else "")
            raise InvalidPromptError(f"points must be an (N, 2) array of x, y, got shape {pts.shape}{hint}")
    if labels is None:
        labs = np.ones(len(pts), np.int64)
    else:
        try:
            labs_f = np.asarray(labels, dtype=np.float64)
        except (ValueError, TypeError):
            raise InvalidPromptError(f"labels must be numbers 1 or 0, got {_shape_of(labels)}") from None
        if labs_f.shape != (len(pts),):
            raise InvalidPromptError(f"labels must have shape ({len(pts)},), got {labs_f.shape}")
        if not np.all(np.isin(labs_f, (0, 1))):
            raise InvalidPromptError(f"labels must be 1 (positive) or 0 (negative), got {np.unique(labs_f).tolist()}")
        labs = labs_f.astype(np.int64)
    if not np.all(np.isfinite(pts)):
        raise InvalidPromptError("points contain NaN or infinite coordinates")
    if size is None:
        return pts, labs
    h, w = size
    bad = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
    if bad.any():
        x, y = pts[bad][0]
        raise InvalidPromptError(f"point ({x:g}, {y:g}) is outside the {w}x{h} image")
    return pts, labs


def _shape_of(value) -> str:
    """A short description of what a user passed (for messages)."""
    try:
        return f"shape {np.shape(value)}"
    except ValueError:  # ragged nested lists
        return f"a ragged {type(value).__name__}"


def check_box(box, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    try:
        b = np.asarray(box, dtype=np.float64).reshape(4)
    except (ValueError, TypeError):
        raise InvalidPromptError(f"box must be 4 numbers x0, y0, x1, y1, got {box!r}") from None
    if not np.all(np.isfinite(b)):
        raise InvalidPromptError("box contains NaN or infinite coordinates")
    x0, y0, x1, y1 = b
    if not (0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h):
        raise InvalidPromptError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not ordered inside the {w}x{h} image")
    return b


def check_reference_mask(mask, image: np.ndarray | tuple[int, int], what: str = "reference mask") -> np.ndarray:
    """Validate an in-memory mask for ``image`` (or its (H, W)): a non-empty 2-D numpy array of its size;
    returned as bool. Anything else (a list, another size, no foreground) is an :class:`InvalidMaskError`."""
    h, w = image if isinstance(image, tuple) else image.shape[:2]
    if not isinstance(mask, np.ndarray):
        raise InvalidMaskError(f"{what} must be a numpy array of shape ({h}, {w}), got {type(mask).__name__}")
    if mask.shape != (h, w):
        got = f"{mask.shape[1]}x{mask.shape[0]}" if mask.ndim == 2 else f"shape {mask.shape}"
        raise InvalidMaskError(f"{what} must have its image's size {w}x{h}, got {got}")
    mask = mask.astype(bool) if mask.dtype != bool else mask
    if not mask.any():
        raise InvalidMaskError(f"{what} is empty: nothing to match")
    return mask


def check_writable(path: str | os.PathLike, suffixes: tuple[str, ...] = ()) -> Path:
    """Fail early (before any expensive work) if the file ``path`` cannot be written.
    ``suffixes``: the allowed file name endings (e.g. ``(".png",)``), checked case-insensitively."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"output {path} must end in {' or '.join(suffixes)} (that is the format written), "
                          f"got {path.suffix or 'no suffix'!r}")
    _no_dangling_link(path)
    if path.is_dir():
        raise OutputError(f"output path is a directory: {path}")
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    _probe_dir(parent)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"output file is not writable: {path}")
    return path


class OutputDir:
    """An output folder checked before any work and created only when the first output is
    written; a run that fails removes the folders it created if they are still empty
    (finished outputs stay). Use as a context manager around the run."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        _no_dangling_link(self.path)
        if self.path.exists():
            if not self.path.is_dir():
                raise OutputError(f"--out {self.path} exists and is not a directory")
            _probe_dir(self.path)
        else:
            base = self.path.parent
            while not base.exists() and base != base.parent:
                base = base.parent
            if not base.is_dir():
                raise OutputError(f"cannot create --out {self.path}: {base} is not a directory")
            _probe_dir(base)
        self._created: list[Path] = []

    def ensure(self) -> Path:
        """The folder, created (with its missing parents) on first call."""
        if not self.path.is_dir():
            missing = [p for p in [self.path, *self.path.parents] if not p.exists()]
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot create --out {self.path}: {e.strerror or e}") from None
            self._created += missing
        return self.path

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            return
        for p in self._created:  # deepest first
            try:
                p.rmdir()  # only if empty
            except OSError:
                break


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
