"""Training checkpoints: model, optimizer, numpy RNG state and history in one safetensors file.

Restoring all four at an epoch boundary makes a resumed run continue exactly as
an uninterrupted one would (same shuffles, same dropout masks, same numbers).
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict

import numpy as np

from ..serialization import atomic_write_bytes, read_safetensors, tensor_digest, verify_digest

_MODEL, _OPTIM, _RNG = "model/", "optim/", "rng/keys"
_LEGACY_STEP = re.compile(r"(^|\.)modules\.(?=\d)")


def current_model_names(state: Dict[str, Any]) -> Dict[str, Any]:
    """Model keys as state_dict() names them now. Checkpoints written before needle's Sequential
    named its layers as PyTorch's does hold `modules.0.weight` where it is now `0.weight`; in
    the recipes' models every `modules.<digit>` step is a Sequential's, so it is dropped."""
    return {_LEGACY_STEP.sub(r"\1", k): v for k, v in state.items()}


def save_checkpoint(path: str, model, optimizer, epoch: int, info: Dict[str, Any]) -> None:
    """Write everything needed to resume after `epoch` (1-based count of finished epochs)."""
    from safetensors.numpy import save as to_bytes

    arrays = {_MODEL + k: v.numpy() for k, v in model.state_dict().items()}
    tensors, scalars = split_optimizer_state(optimizer.state_dict())
    arrays.update({_OPTIM + k: v for k, v in tensors.items()})
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    arrays[_RNG] = np.asarray(keys, dtype=np.uint32)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    meta = {
        "epoch": epoch,
        "optimizer_scalars": scalars,
        "rng": [kind, int(pos), int(has_gauss), float(cached)],
        "info": info,
        "sha256": tensor_digest(arrays),
    }
    atomic_write_bytes(path, to_bytes(arrays, metadata={"needle_checkpoint": json.dumps(meta)}))


def split_optimizer_state(state: Dict[str, Any]):
    """An optimizer's state_dict as ({"state.<param index>.<name>": numpy array}, everything else as
    JSON-able values: param_groups and scalar state such as Adam's t)."""
    arrays = {f"state.{i}.{name}": value.numpy() for i, entry in state.get("state", {}).items()
              for name, value in entry.items()}
    return arrays, {k: v for k, v in state.items() if k != "state"}


def join_optimizer_state(arrays: Dict[str, np.ndarray], scalars: Dict[str, Any]) -> Dict[str, Any]:
    """The inverse of split_optimizer_state. Checkpoints written before parameter groups hold
    flat keys ("u.0") and no param_groups: passed on as they are (load_state_dict reads both)."""
    if "param_groups" not in scalars:
        return dict(arrays, **scalars)
    state: Dict[int, Dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return dict(scalars, state=state)


def _read(path: str):
    """The arrays and metadata of a checkpoint file, checked for the parts a resume needs
    and against the checksum of its tensors."""
    arrays, header = read_safetensors(path)
    try:
        meta = json.loads(header["needle_checkpoint"])
        missing = [k for k in ("epoch", "optimizer_scalars", "rng", "info", "sha256") if k not in meta]
        missing += [f"info.{k}" for k in ("config", "history") if k not in meta.get("info", {})]
        if _RNG not in arrays:
            missing.append(_RNG)
        if missing:
            raise ValueError("missing " + ", ".join(missing))
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a needle checkpoint: {err}") from None
    verify_digest(path, arrays, meta["sha256"])
    return arrays, meta


def read_checkpoint_meta(path: str) -> Dict[str, Any]:
    """The stored metadata (epoch, info with config and history) without restoring anything."""
    return _read(path)[1]


def load_checkpoint(path: str, model, optimizer) -> Dict[str, Any]:
    """Restore model, optimizer and numpy RNG from `path`; returns the stored metadata."""
    arrays, meta = _read(path)
    model.load_state_dict(current_model_names({k[len(_MODEL):]: v for k, v in arrays.items()
                                               if k.startswith(_MODEL)}))
    optimizer.load_state_dict(join_optimizer_state(
        {k[len(_OPTIM):]: v for k, v in arrays.items() if k.startswith(_OPTIM)}, meta["optimizer_scalars"]))
    kind, pos, has_gauss, cached = meta["rng"]
    np.random.set_state((kind, arrays[_RNG], pos, has_gauss, cached))
    return meta
