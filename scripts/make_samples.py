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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
