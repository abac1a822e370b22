"""Shared fixtures: the real MobileSAM and the real data in ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest

from ppd import data


@pytest.fixture(scope="session")
def data_root():
    root = data.default_root()
    assert (root / "manifest.csv").is_file(), f"the shared data are missing: {root}"
    return root


@pytest.fixture(scope="session")
def manifest(data_root):
    return data.read_manifest(data_root)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ppd-cache")


@pytest.fixture(scope="session")
def segmenter(cache_dir):
    from ppd.sam import Segmenter

    return Segmenter(cache_dir=cache_dir)


def pick(manifest, dataset: str, split: str, n: int):
    rows = [s for s in manifest if s.dataset == dataset and s.split == split]
    assert len(rows) >= n
    return rows[:n]


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel farthest from the mask's border."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def td_loss_before_after(agent, updates: int, probe: int) -> tuple[float, float]:
    """TD loss on a fixed probe batch of the agent's buffer before and after ``updates`` updates."""
    import torch

    batch = agent.buffer.sample(probe, np.random.default_rng(1))
    with torch.no_grad():
        before = agent.td_loss(batch).item()
    for _ in range(updates):
        agent.update()
    with torch.no_grad():
        return before, agent.td_loss(batch).item()


def fill_buffer(agent, env, n: int, rng) -> None:
    """Fill an agent's replay buffer with ``n`` transitions of random valid actions in ``env``."""
    while agent.buffer.size < n:
        _, info = env.reset()
        state, done = env.snapshot(), False
        while not done:
            a = int(rng.choice(np.nonzero(info["action_mask"])[0]))
            _, r, done, _, info = env.step(a)
            nxt = env.snapshot()
            agent.buffer.add(state, a, r, nxt, np.zeros_like(info["action_mask"]) if done else info["action_mask"],
                             done)
            state = nxt


def plain_folder(folder, samples):
    """A user's images/ + masks/ folder (copies in a temporary directory, never in the repo)."""
    import shutil

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for s in samples:
        shutil.copy(s.image_path, folder / "images" / s.image_path.name)
        shutil.copy(s.mask_path, folder / "masks" / s.mask_path.name)
    return folder


def need(module: str):
    """Import an optional dependency, or skip loudly; under ``CI=true`` its absence fails the test."""
    import importlib
    import os

    try:
        return importlib.import_module(module)
    except ImportError:
        why = f"OPTIONAL DEPENDENCY MISSING: {module} (the setup installs it: scripts/setup-venv.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why, allow_module_level=True)
