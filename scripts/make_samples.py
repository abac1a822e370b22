"""Build src/ppd/assets/samples/ (run once by a developer; kept for provenance).

DSB2018 images are CC0 (BBBC038v1); they are taken from the *val* split only, so
the shipped agents never train on them. The two photographs come from
scikit-image's bundled data (chelsea: CC0; coffee: CC0, Rachel Michetti).
Clicks for DSB images are the most interior pixel of the largest nucleus.
Usage: python scripts/make_samples.py SKIMAGE_DATA_DIR
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "src" / "ppd" / "assets" / "samples"
DSB = {  # id -> short name
    "0f1f896d9ae5a04752d3239c690402c022db4d72c0d2c087d73380896f72c466": "dsb-he",
    "1747f62148a919c8feb6d607faeebdf504b5e2ad42b6b1710b1189c37ebcdb2c": "dsb-fluo",
}


def main(skdata: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    items = []
    for sid, name in DSB.items():
        shutil.copyfile(DATA / "dsb2018" / "images" / f"{sid}.jpg", OUT / f"{name}.jpg")
        labels = np.asarray(Image.open(DATA / "dsb2018" / "labels" / f"{sid}.png"))
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        k = int(sizes.argmax())
        nucleus = labels == k
        Image.fromarray(nucleus.astype(np.uint8) * 255).save(OUT / f"{name}.mask.png")
        dist = ndimage.distance_transform_edt(np.pad(nucleus, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(dist.argmax()), dist.shape)
        items.append({"image": f"{name}.jpg", "mask": f"{name}.mask.png", "points": [[int(x), int(y)]],
                      "labels": [1], "source": f"DSB2018 stage1_test {sid} (val split), largest nucleus",
                      "license": "CC0 1.0 (BBBC038v1)"})
    for name, pts, labs, lic in [
        ("chelsea", [[250, 150], [180, 118]], [1, 1], "CC0 (scikit-image data: chelsea.png, Stefan van der Walt)"),
        ("coffee", [[285, 110], [340, 200]], [1, 1], "CC0 (scikit-image data: coffee.png, Rachel Michetti)"),
    ]:
        Image.open(skdata / f"{name}.png").convert("RGB").save(OUT / f"{name}.jpg", quality=92)
        items.append({"image": f"{name}.jpg", "mask": None, "points": pts, "labels": labs,
                      "source": f"scikit-image bundled data {name}.png, re-encoded JPEG q92", "license": lic})
    (OUT / "samples.json").write_text(json.dumps(items, indent=1) + "\n")




# --------------------------------------------------------------------------- one-shot groups
ONESHOT = ROOT / "src" / "ppd" / "assets" / "oneshot"
FLUO = {  # DSB2018 val-split fluorescence images: reference first
    "432f367a4c5b5674de2e2977744d10289a064e5704b21af6607b4975be47c580": "fluo-ref",
    "0999dab07b11bc85fb8464fc36c947fbd8b5d6ec49817361cb780659ca805eac": "fluo-a",
    "43a71aeb641faa18742cb826772a8566c6c947d7050f9ab15459de6cc2b3b6af": "fluo-b",
}


def coin_mask(grey: np.ndarray) -> np.ndarray:
    """A self-made coins mask: Otsu-like threshold, holes filled, specks removed (not ground truth)."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(float)
    best, thr = -1.0, 128
    for t in range(1, 255):
        w0, w1 = hist[:t].sum(), hist[t:].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (hist[:t] * np.arange(t)).sum() / w0
        m1 = (hist[t:] * np.arange(t, 256)).sum() / w1
        if w0 * w1 * (m0 - m1) ** 2 > best:
            best, thr = w0 * w1 * (m0 - m1) ** 2, t
    m = ndimage.binary_fill_holes(ndimage.binary_opening(grey > thr, iterations=2))
    lab, n = ndimage.label(m)
    sizes = ndimage.sum(m, lab, range(1, n + 1))
    return np.isin(lab, 1 + np.nonzero(sizes >= 150)[0])


def make_oneshot(skdata: Path) -> None:
    ONESHOT.mkdir(parents=True, exist_ok=True)
    groups = []
    names = list(FLUO.values())
    for sid, name in FLUO.items():
        shutil.copyfile(DATA / "dsb2018" / "images" / f"{sid}.jpg", ONESHOT / f"{name}.jpg")
        shutil.copyfile(DATA / "dsb2018" / "masks" / f"{sid}.png", ONESHOT / f"{name}.mask.png")
    groups.append({"name": "nuclei (DSB2018 fluorescence, val split)", "ref": f"{names[0]}.jpg",
                   "ref_mask": f"{names[0]}.mask.png", "targets": [f"{n}.jpg" for n in names[1:]],
                   "target_masks": [f"{n}.mask.png" for n in names[1:]], "masks": "ground truth (DSB2018)"})
    grey = np.asarray(Image.open(skdata / "coins.png").convert("L"))
    h, w = grey.shape
    crops = {"coins-ref": (0, 0), "coins-a": (0, 1), "coins-b": (1, 0), "coins-c": (1, 1)}
    for name, (r, c) in crops.items():
        g = grey[r * h // 2:(r + 1) * h // 2, c * w // 2:(c + 1) * w // 2]
        Image.fromarray(g).convert("RGB").save(ONESHOT / f"{name}.jpg", quality=92)
        Image.fromarray(coin_mask(g).astype(np.uint8) * 255).save(ONESHOT / f"{name}.mask.png")
    cn = list(crops)
    groups.append({"name": "coins (scikit-image coins.png quadrants)", "ref": f"{cn[0]}.jpg",
                   "ref_mask": f"{cn[0]}.mask.png", "targets": [f"{n}.jpg" for n in cn[1:]],
                   "target_masks": [f"{n}.mask.png" for n in cn[1:]],
                   "masks": "self-made by scripts/make_samples.py (threshold + hole filling), not ground truth"})
    (ONESHOT / "groups.json").write_text(json.dumps(groups, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    make_oneshot(Path(sys.argv[1]))
