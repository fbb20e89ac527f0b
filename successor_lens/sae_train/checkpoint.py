"""Training checkpoints: one safetensors file per checkpoint, with the scalar state as JSON
metadata inside it, written atomically (temp file then rename). Loading never unpickles."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from successor_lens.errors import UserError
from successor_lens.io import MAX_JSON_DEPTH, BadFileError, atomic_path, check_safetensors, json_depth, refuse_links


class CheckpointError(UserError, RuntimeError):
    pass


class Checkpointer:
    """Writes `ckpt_{step:08d}.safetensors` into a folder and keeps the newest `keep`."""

    def __init__(self, folder: str | os.PathLike, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep

    def paths(self) -> list[Path]:
        return sorted(self.folder.glob("ckpt_*.safetensors"))

    def save(self, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        path = self.folder / f"ckpt_{step:08d}.safetensors"
        refuse_links(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata={"state": json.dumps({"step": step, **meta})})
        for old in self.paths()[: -self.keep]:
            old.unlink()
        return path

    def latest(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        paths = self.paths()
        if not paths:
            return None
        path = paths[-1]
        try:
            check_safetensors(path)
            with safe_open(path, framework="pt") as f:
                text = (f.metadata() or {})["state"]
                if json_depth(text.encode()) > MAX_JSON_DEPTH:
                    raise KeyError("state")
                state = json.loads(text)
                if not isinstance(state, dict):
                    raise KeyError("state")
                return {k: f.get_tensor(k) for k in f.keys()}, state  # noqa: SIM118 (safe_open is not iterable)
        except KeyError:
            raise CheckpointError(f"checkpoint {path} has no training state in its metadata (not written by successor-lens?): "
                                  "delete it to resume from the one before") from None
        except (SafetensorError, BadFileError, json.JSONDecodeError, OSError) as err:
            raise CheckpointError(f"checkpoint {path} is unreadable ({err}): delete it to resume from the one before") from None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON-able scalars."""
    state = optimizer.state_dict()
    tensors = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            tensors[f"opt.{pid}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
