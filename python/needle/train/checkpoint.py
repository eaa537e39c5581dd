"""Training checkpoints: model, optimizer, numpy RNG state and history in one safetensors file.

Restoring all four at an epoch boundary makes a resumed run continue exactly as
an uninterrupted one would (same shuffles, same dropout masks, same numbers).
"""
from __future__ import annotations

import json
from typing import Any, Dict

import numpy as np

from ..serialization import atomic_write_bytes, read_safetensors, tensor_digest, verify_digest

_MODEL, _OPTIM, _RNG = "model/", "optim/", "rng/keys"


def save_checkpoint(path: str, model, optimizer, epoch: int, info: Dict[str, Any]) -> None:
    """Write everything needed to resume after `epoch` (1-based count of finished epochs)."""
    from safetensors.numpy import save as to_bytes

    arrays = {_MODEL + k: v.numpy() for k, v in model.state_dict().items()}
    scalars = {}
    for key, value in optimizer.state_dict().items():
        if hasattr(value, "numpy"):
            arrays[_OPTIM + key] = value.numpy()
        else:
            scalars[key] = value
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
    model.load_state_dict({k[len(_MODEL):]: v for k, v in arrays.items() if k.startswith(_MODEL)})
    optim_state = {k[len(_OPTIM):]: v for k, v in arrays.items() if k.startswith(_OPTIM)}
    optim_state.update(meta["optimizer_scalars"])
    optimizer.load_state_dict(optim_state)
    kind, pos, has_gauss, cached = meta["rng"]
    np.random.set_state((kind, arrays[_RNG], pos, has_gauss, cached))
    return meta
