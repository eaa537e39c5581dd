"""Saving tensors to safetensors files, atomically (a crash never leaves half a file)."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from typing import Dict, Optional

import numpy as np

from .autograd import Tensor


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file owner-only (0600); give it the mode a plain open() would
            # (or the mode of the file it replaces)
            os.fchmod(f.fileno(), _target_mode(path))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _target_mode(path) -> int:
    """The existing file's permission bits, else 0o666 minus the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save(tensors: Dict[str, Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write a dict of tensors (e.g. `model.state_dict()`) as a safetensors file.

    Readable by `safetensors.torch.load_file` and `safetensors.numpy.load_file`.
    """
    from safetensors.numpy import save as to_bytes

    if not isinstance(tensors, dict):
        raise TypeError(f"save expects a dict of name -> Tensor, got {type(tensors).__name__}")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"save: tensor names must be strings, got {name!r}")
        arrays[name] = np.ascontiguousarray(value.numpy() if isinstance(value, Tensor) else np.asarray(value))
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, to_bytes(arrays, metadata=meta or None))


def load(path: str, device=None) -> Dict[str, Tensor]:
    """Read a safetensors file into a dict of name -> Tensor (requires_grad=False)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        arrays = load_file(path)
    except (SafetensorError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    except TypeError as err:  # a valid file whose dtype numpy cannot represent, e.g. BF16
        raise ValueError(f"{path} holds a tensor of a dtype needle cannot load: {err}") from None
    return {
        name: Tensor(array, device=device, dtype=array.dtype.name if array.dtype.kind == "f" else None,
                     requires_grad=False)
        for name, array in arrays.items()
    }


def load_metadata(path: str) -> Dict[str, str]:
    """The string metadata stored in a safetensors file header."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        return dict(f.metadata() or {})
