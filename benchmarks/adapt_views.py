"""Write the 8 dihedral views of each seeded val reference of a dataset as a plain images/ + masks/ folder
(for benchmarks/adapt_screen.sh); prints the reference ids.

Run: .venv/bin/python benchmarks/adapt_views.py DATASET OUT_DIR [REFERENCES]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ppd import data
from ppd.evaluate.harness import select
from ppd.train.adapt import dihedral_views


def main() -> None:
    ds, out = sys.argv[1], Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    samples = [s for s in data.load_dataset(split="val") if s.dataset == ds]
    refs, _ = select(samples, n, None, 20, 0)
    for r in refs:
        d = out / ds / r.id
        (d / "images").mkdir(parents=True, exist_ok=True)
        (d / "masks").mkdir(parents=True, exist_ok=True)
        for j, (im, m) in enumerate(dihedral_views(r.image(), r.mask())):
            Image.fromarray(im).save(d / "images" / f"v{j}.png")
            Image.fromarray(m.astype(np.uint8) * 255).save(d / "masks" / f"v{j}.png")
        print(r.id)


if __name__ == "__main__":
    main()
