"""Saving tensors to safetensors files, atomically (a crash never leaves half a file)."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
import tempfile
from typing import Dict, Mapping, Optional

import numpy as np

from .autograd import Tensor

CHECKSUM_KEY = "needle_sha256"
_TMP_PREFIX = ".tmp-"


class WriteError(OSError):
    """atomic_write_bytes could not write `path`: the OSError's filename is the target the
    caller asked for, never the temporary file beside it, so a message can name it."""


def tensor_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 (hex) of named arrays: names, dtypes, shapes and bytes, in sorted name order.

    Stored in a file's metadata when it is written and recomputed when it is read, so a
    flipped byte in the tensor data is caught instead of silently loaded.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def verify_digest(path: str, arrays: Mapping[str, np.ndarray], expected: str) -> None:
    """ValueError naming `path` unless the arrays read from it hash to `expected`."""
    if tensor_digest(arrays) != expected:
        raise ValueError(f"{path} is corrupted: its tensor data does not match the sha256 checksum "
                         "recorded when it was written")


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`.

    Temporary files of earlier writes to `path` that never finished (a killed process
    leaves its `.tmp-*` file behind) are removed after this one succeeds. Raises WriteError
    (an OSError whose filename is `path`) when the file cannot be written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX, suffix=os.path.basename(path))
    except OSError as err:
        raise WriteError(err.errno, err.strerror, path) from err
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file owner-only (0600); give it the mode a plain open() would
            # (or the mode of the file it replaces)
            os.fchmod(f.fileno(), _target_mode(path))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise WriteError(err.errno, err.strerror, path) from err
        raise
    _remove_stale_temporaries(directory, os.path.basename(path))


def _remove_stale_temporaries(directory: str, name: str) -> None:
    # the pattern starts with a dot, so glob matches these hidden files without include_hidden
    pattern = os.path.join(glob.escape(directory), glob.escape(_TMP_PREFIX) + "*" + glob.escape(name))
    for stale in glob.glob(pattern):
        try:
            os.unlink(stale)
        except OSError:  # another process's cleanup got there first
            pass


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
    if CHECKSUM_KEY in meta:
        raise ValueError(f"save: the metadata key {CHECKSUM_KEY!r} is reserved for needle's checksum")
    meta[CHECKSUM_KEY] = tensor_digest(arrays)
    atomic_write_bytes(path, to_bytes(arrays, metadata=meta))


def read_safetensors(path: str):
    """(arrays, metadata) of a safetensors file, as numpy arrays and a dict of strings.

    Raises FileNotFoundError, or ValueError naming `path` when it is not a readable
    safetensors file. The checksum is not verified here (see load and load_checkpoint).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a safetensors file")
    try:
        arrays = load_file(path)
        with safe_open(path, framework="numpy") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    except TypeError as err:  # a valid file whose dtype numpy cannot represent, e.g. BF16
        raise ValueError(f"{path} holds a tensor of a dtype needle cannot load: {err}") from None
    # numpy represents BF16 too once ml_dtypes is imported (onnx and numba-cuda import it): refuse it all the same
    odd = {name: a.dtype.name for name, a in arrays.items() if a.dtype.kind not in "biuf"}
    if odd:
        raise ValueError(f"{path} holds a tensor of a dtype needle cannot load: {odd}")
    return arrays, metadata


def load(path: str, device=None) -> Dict[str, Tensor]:
    """Read a safetensors file into a dict of name -> Tensor (requires_grad=False).

    A file written by `needle.save` carries a sha256 of its tensors, checked here: a
    corrupted file raises ValueError naming it. Files from other tools (no checksum)
    load as they are.
    """
    arrays, metadata = read_safetensors(path)
    if CHECKSUM_KEY in metadata:
        verify_digest(path, arrays, metadata[CHECKSUM_KEY])
    return {
        name: Tensor(array, device=device, dtype=array.dtype.name if array.dtype.kind == "f" else None,
                     requires_grad=False)
        for name, array in arrays.items()
    }


def load_metadata(path: str) -> Dict[str, str]:
    """The string metadata stored in a safetensors file header (without needle's checksum)."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        return {k: v for k, v in (f.metadata() or {}).items() if k != CHECKSUM_KEY}
