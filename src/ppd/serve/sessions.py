"""What the browser app holds: isolated sessions, their images, and a small LRU of frames.

A session is a random id (``secrets``); it owns the images uploaded or picked in it, each
under another random id, so no one can name, read or prompt another session's images.
Uploads are decoded once (EXIF rotation applied, so clicks land where the user sees them)
and kept as PNG files in a private temporary folder (mode 0700) that is removed when the
server stops. Frames (SAM embeddings) are shared by pixel hash in an LRU of at most
:data:`MAX_FRAMES`; an evicted one comes back from the on-disk embedding cache.
"""

from __future__ import annotations

import io
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ppd.errors import InvalidImageError, InvalidMaskError, PPDError
from ppd.io import check_reference_mask, read_image, read_mask, to_rgb

#: Largest upload, in bytes (issue #17).
MAX_UPLOAD = 20 * 1024 * 1024
#: Largest uploaded image in pixels (a 20 MB PNG could hold far more than a click needs).
MAX_UPLOAD_PIXELS = 40_000_000
#: Frames (embeddings + decoder tensors) held in memory, shared by all sessions.
MAX_FRAMES = 8
#: One-shot references held in memory with their features (shared by sessions using the same one).
MAX_REFERENCES = 4
#: Defenders adapted to a one-shot reference (one-shot "adapt"), shared by sessions using the same one.
MAX_ADAPTED = 4
#: Sessions held; the least recently used one (and its files) goes beyond this.
MAX_SESSIONS = 64
#: Images per session; the least recently used one (never the one-shot reference) goes beyond this.
MAX_IMAGES = 32
#: Formats an upload may have (no PostScript and the like, which PIL would hand to other programs).
UPLOAD_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")


class NotFound(PPDError, KeyError):
    """An unknown session, image or sample (answered 404)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class UploadTooLarge(PPDError, ValueError):
    """An upload above :data:`MAX_UPLOAD` (answered 413)."""


@dataclass
class ImageEntry:
    """One image of a session: where its pixels are, their hash, size, and an optional mask."""

    id: str
    name: str
    path: Path  # RGB PNG as the user sees it (EXIF applied) or a shipped sample
    sha256: str
    size: tuple[int, int]  # (H, W)
    mask: np.ndarray | None = None  # ground truth / uploaded mask, if any


@dataclass
class Session:
    id: str
    folder: Path
    images: OrderedDict[str, ImageEntry] = field(default_factory=OrderedDict)
    reference: tuple[str, np.ndarray] | None = None  # (image id, mask) for one-shot mode
    touched: float = field(default_factory=time.monotonic)

    def image(self, iid: str) -> ImageEntry:
        try:
            entry = self.images[iid]
            self.images.move_to_end(iid)
        except KeyError:  # unknown, or evicted by another request of this session meanwhile
            raise NotFound(f"no image {iid!r} in this session") from None
        return entry


def shipped_samples() -> dict[str, dict]:
    """Sample name -> {"image": path, "mask": path | None, "group": ...}: the click samples and the
    one-shot groups' images. Names come from this fixed list only, so a name cannot walk a path."""
    root = resources.files("ppd") / "assets"
    out: dict[str, dict] = {}
    import json

    for it in json.loads((root / "samples" / "samples.json").read_text()):
        out[Path(it["image"]).stem] = {"image": root / "samples" / it["image"], "group": "click",
                                       "mask": root / "samples" / it["mask"] if it.get("mask") else None,
                                       "points": it["points"], "labels": it["labels"]}
    for g in json.loads((root / "oneshot" / "groups.json").read_text()):
        pairs = [(g["ref"], g["ref_mask"])] + list(zip(g["targets"], g["target_masks"], strict=True))
        for img, msk in pairs:
            out[Path(img).stem] = {"image": root / "oneshot" / img, "mask": root / "oneshot" / msk,
                                   "group": g["name"], "role": "reference" if img == g["ref"] else "target"}
    return out


def decode_upload(data: bytes, what: str = "image") -> Image.Image:
    """Open uploaded bytes with PIL, with the same limits and one-line errors as files on disk."""
    import warnings

    err = InvalidImageError if what == "image" else InvalidMaskError
    if len(data) > MAX_UPLOAD:
        raise UploadTooLarge(f"the {what} is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD // 2**20} MB")
    if not data:
        raise err(f"the uploaded {what} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
            w, h = im.size
            if w * h > MAX_UPLOAD_PIXELS:
                raise err(f"the {what} is {w}x{h} px, above the app's limit of {MAX_UPLOAD_PIXELS:,} px")
            im.load()
    except PPDError:
        raise
    except Exception as e:  # PIL raises many types on corrupt files; all mean "not a readable image"
        raise err(f"cannot read the uploaded {what}: not an image file or corrupt ({type(e).__name__})") from None
    return im


class SessionStore:
    """Sessions, their files and the shared frame LRU. Thread-safe: routes run in a thread pool."""

    def __init__(self, segmenter, max_frames: int = MAX_FRAMES, max_sessions: int = MAX_SESSIONS) -> None:
        self.seg = segmenter
        self.max_frames, self.max_sessions = max_frames, max_sessions
        self.root = Path(tempfile.mkdtemp(prefix="ppd-serve-"))  # 0700: only this user reads uploads
        self.root.rmdir()  # made on the first session; removed (with every session) by close()
        self.samples = shipped_samples()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._frames: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self._embed_locks: dict[str, threading.Lock] = {}
        self._references: OrderedDict[tuple[str, str], object] = OrderedDict()  # one-shot references
        self._adapted: OrderedDict[tuple, object] = OrderedDict()  # defenders adapted to one (adapted_defender)

    # ----------------------------------------------------------------- sessions
    def new_session(self) -> Session:
        sid = secrets.token_urlsafe(18)
        folder = self.root / sid
        self.root.mkdir(mode=0o700, exist_ok=True)
        folder.mkdir(mode=0o700)
        s = Session(sid, folder)
        with self._lock:
            self._sessions[sid] = s
            while len(self._sessions) > self.max_sessions:
                _, old = self._sessions.popitem(last=False)
                shutil.rmtree(old.folder, ignore_errors=True)
        return s

    def session(self, sid: str) -> Session:
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                raise NotFound("unknown or expired session: reload the page")
            self._sessions.move_to_end(sid)
            s.touched = time.monotonic()
            return s

    def close(self) -> None:
        """Forget every session and remove their files (the server is stopping)."""
        with self._lock:
            self._sessions.clear()
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------- images
    def _add(self, s: Session, entry: ImageEntry) -> ImageEntry:
        with self._lock:
            s.images[entry.id] = entry
            keep = s.reference[0] if s.reference is not None else None
            for iid in [i for i in s.images if i != keep][: max(0, len(s.images) - MAX_IMAGES)]:
                old = s.images.pop(iid)
                if old.path.parent == s.folder:
                    old.path.unlink(missing_ok=True)
        return entry

    def add_upload(self, s: Session, name: str, data: bytes) -> ImageEntry:
        """Decode an upload (EXIF applied), keep it as a private PNG, embed it."""
        rgb = to_rgb(decode_upload(data))
        iid = secrets.token_urlsafe(9)
        path = s.folder / f"{iid}.png"
        tmp = path.with_suffix(".part")
        try:
            Image.fromarray(rgb).save(tmp, format="PNG", compress_level=1)
            tmp.replace(path)
            frame = self.frame_of_array(rgb)
        except FileNotFoundError:  # the session was evicted (its folder removed) meanwhile
            raise NotFound("unknown or expired session: reload the page") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise
        safe = "".join(c for c in Path(name or "upload").name if c.isprintable())[:80] or "upload"
        return self._add(s, ImageEntry(iid, safe, path, frame.image_sha256, tuple(rgb.shape[:2])))

    def add_sample(self, s: Session, name: str) -> ImageEntry:
        item = self.samples.get(name)
        if item is None:
            raise NotFound(f"no shipped sample named {name!r}")
        with resources.as_file(item["image"]) as p:
            rgb = read_image(p)
            path = Path(p)
        mask = None
        if item.get("mask") is not None:
            with resources.as_file(item["mask"]) as mp:
                mask = read_mask(mp, shape=rgb.shape[:2])
        frame = self.frame_of_array(rgb)
        return self._add(s, ImageEntry(secrets.token_urlsafe(9), name, path, frame.image_sha256,
                                       tuple(rgb.shape[:2]), mask))

    def set_mask(self, s: Session, iid: str, data: bytes) -> np.ndarray:
        entry = s.image(iid)
        im = ImageOps.exif_transpose(decode_upload(data, "mask"))
        arr = np.asarray(im.convert("L"))
        levels = np.unique(arr)
        if len(levels) > 2 or (len(levels) == 2 and levels.min() != 0):
            raise InvalidMaskError(f"the mask must be binary with background 0 (it has levels "
                                   f"{levels[:6].tolist()}{'...' if len(levels) > 6 else ''})")
        mask = check_reference_mask(arr > 0, entry.size, "uploaded mask")
        entry.mask = mask
        return mask

    # ------------------------------------------------------------------- frames
    def frame_of_array(self, rgb: np.ndarray):
        from ppd.sam.cache import image_key

        sha = image_key(rgb)
        with self._lock:
            hit = self._frames.get(sha)
            if hit is not None:
                self._frames.move_to_end(sha)
                return hit
            lock = self._embed_locks.setdefault(sha, threading.Lock())
        with lock:  # two sessions opening one image embed it once
            with self._lock:
                hit = self._frames.get(sha)
            if hit is None:
                hit = self.seg.frame(rgb)
            with self._lock:
                self._frames[sha] = hit
                self._frames.move_to_end(sha)
                while len(self._frames) > self.max_frames:
                    self._frames.popitem(last=False)
                self._embed_locks.pop(sha, None)
        return hit

    def frame(self, entry: ImageEntry):
        """The entry's frame: from the LRU, else re-read (the disk cache holds its embedding)."""
        with self._lock:
            hit = self._frames.get(entry.sha256)
            if hit is not None:
                self._frames.move_to_end(entry.sha256)
                return hit
        return self.frame_of_array(read_image(entry.path))

    def oneshot_reference(self, entry: ImageEntry, mask: np.ndarray):
        """The :class:`ppd.oneshot.OneShotReference` of an image and mask, made once and kept (LRU of
        :data:`MAX_REFERENCES`) with its patch features and graph reference, which every Defend and
        one-shot target of the sessions using it read."""
        from ppd.oneshot import OneShotReference

        key = (entry.sha256, _mask_key(mask))
        with self._lock:
            ref = self._references.get(key)
            if ref is not None:
                self._references.move_to_end(key)
                return ref
        ref = OneShotReference.make(self.frame(entry), mask)
        with self._lock:
            self._references[key] = ref
            while len(self._references) > MAX_REFERENCES:
                self._references.popitem(last=False)
        return ref

    def adapted_defender(self, entry: ImageEntry, mask: np.ndarray, defender, attacker,
                         config) -> tuple[object, float, bool]:
        """``defender`` adapted to the reference ``entry`` / ``mask`` (:func:`ppd.train.adapt.adapt_defender`),
        made once per reference and settings and kept (LRU of :data:`MAX_ADAPTED`): (the Defender, seconds
        taken, whether it was reused). Only the app's one job thread calls this, so one reference is never
        adapted twice at once; meanwhile the other sessions' jobs wait (their clicks do not)."""
        from ppd.train.adapt import adapt_defender

        key = (entry.sha256, _mask_key(mask), config)
        with self._lock:
            hit = self._adapted.get(key)
            if hit is not None:
                self._adapted.move_to_end(key)
                return hit, 0.0, True
        t0 = time.perf_counter()
        adapted = adapt_defender(defender, read_image(entry.path), mask, attacker, config)
        with self._lock:
            self._adapted[key] = adapted
            while len(self._adapted) > MAX_ADAPTED:
                self._adapted.popitem(last=False)
        return adapted, round(time.perf_counter() - t0, 2), False

    def frames_held(self) -> int:
        with self._lock:
            return len(self._frames)


def _mask_key(mask: np.ndarray) -> str:
    """A short digest of a boolean mask (its bits and shape), for keys of what was made from it."""
    import hashlib

    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()
