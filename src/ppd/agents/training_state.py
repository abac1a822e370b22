"""An agent's whole training state on disk (for ``ppd train --resume``), beside its inference checkpoint.

``DQNAgent.save`` keeps only what inference needs (the online network and its config). Resuming also
needs the target network, Adam's moments, the replay buffer, the update count and the exploration RNG:
three files per agent, ``NAME.safetensors`` (tensors), ``NAME.buffer.safetensors`` (the replay memory's
compact arrays) and ``NAME.json``. The caller makes the folder atomic (temporary folder, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file as load_pt
from safetensors.torch import save_file as save_pt

from ppd.agents.dqn import DQNAgent


def save_training_state(agent: DQNAgent, folder: Path, name: str) -> None:
    tensors = {f"q.{k}": v.contiguous() for k, v in agent.q.state_dict().items()}
    tensors |= {f"target.{k}": v.contiguous() for k, v in agent.q_target.state_dict().items()}
    opt = agent.opt.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = torch.as_tensor(v).contiguous()
    save_pt(tensors, str(folder / f"{name}.safetensors"))
    save_np(agent.buffer.state_arrays(), str(folder / f"{name}.buffer.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({
        "updates": agent.updates, "param_groups": opt["param_groups"],
        "rng": agent.rng.bit_generator.state}, default=int))


def load_training_state(agent: DQNAgent, folder: Path, name: str, feats: dict) -> None:
    """Restore what :func:`save_training_state` wrote; ``feats`` (image index -> graph node features)
    rebuilds the replay memory's observations. Raises OSError / KeyError / ValueError / RuntimeError on a
    damaged or foreign folder (the caller words the error)."""
    t = load_pt(str(folder / f"{name}.safetensors"))
    meta = json.loads((folder / f"{name}.json").read_text())
    agent.q.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("q.")})
    agent.q_target.load_state_dict({k[7:]: v for k, v in t.items() if k.startswith("target.")})
    opt_state: dict = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    agent.opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    agent.buffer.load_arrays(load_np(str(folder / f"{name}.buffer.safetensors")), feats)
    agent.updates = meta["updates"]
    agent.rng.bit_generator.state = meta["rng"]
