"""Penn Treebank style word-level language-modelling data.

Text files (``train.txt``, ``test.txt``) with one sentence per line; every
line becomes its whitespace-separated words followed by ``"<eos>"``.
"""
from __future__ import annotations

import numbers
import os
from typing import List, Optional

import numpy as np

from ...autograd import Tensor
from ._files import check_dir, check_file

EOS = "<eos>"


class Dictionary:
    """Word <-> id maps; ids are consecutive from 0 in insertion order.

    ``word2idx``: dict word -> id; ``idx2word``: list id -> word.
    """

    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word: str) -> int:
        """Add ``word`` if new; return its id."""
        idx = self.word2idx.get(word)
        if idx is None:
            idx = len(self.idx2word)
            self.word2idx[word] = idx
            self.idx2word.append(word)
        return idx

    def __len__(self) -> int:
        return len(self.idx2word)


def _check_max_lines(max_lines):
    if max_lines is None:
        return None
    if isinstance(max_lines, bool) or not isinstance(max_lines, numbers.Integral):
        raise TypeError(f"max_lines must be a non-negative integer or None, got {max_lines!r}")
    if max_lines < 0:
        raise ValueError(f"max_lines must be >= 0, got {max_lines}")
    return int(max_lines)


class Corpus:
    """Tokenised ``train.txt`` then ``test.txt`` of ``base_dir`` with one shared dictionary.

    Attributes: ``dictionary``, ``train`` and ``test`` (flat lists of word ids).
    """

    def __init__(self, base_dir, max_lines: Optional[int] = None):
        base_dir = check_dir(base_dir, "PTB data directory")
        max_lines = _check_max_lines(max_lines)
        self.dictionary = Dictionary()
        self.train = self.tokenize(os.path.join(base_dir, "train.txt"), max_lines)
        self.test = self.tokenize(os.path.join(base_dir, "test.txt"), max_lines)

    def tokenize(self, path, max_lines: Optional[int] = None) -> List[int]:
        """Ids of the words of the first ``max_lines`` lines (all if None) of ``path``;
        each line contributes ``line.split()`` followed by ``"<eos>"``. New words are
        added to the dictionary."""
        path = check_file(path, "PTB text file")
        max_lines = _check_max_lines(max_lines)
        ids = []
        try:
            with open(path, "r", encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if max_lines is not None and i >= max_lines:
                        break
                    for word in line.split() + [EOS]:
                        ids.append(self.dictionary.add_word(word))
        except UnicodeDecodeError as e:
            raise ValueError(f"PTB text file {path!r} is not valid UTF-8 text: {e}") from None
        return ids


def batchify(data, batch_size: int, device=None, dtype=None) -> np.ndarray:
    """Arrange a flat id sequence into ``batch_size`` columns.

    Returns a numpy array of shape ``(nbatch, batch_size)`` with
    ``nbatch = len(data) // batch_size`` (the tail is dropped); column ``j`` is the
    contiguous chunk ``data[j*nbatch:(j+1)*nbatch]``. ``device`` and ``dtype`` are
    accepted for API compatibility; the ids stay integers (``get_batch`` converts).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batchify batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batchify batch_size must be at least 1, got {batch_size}")
    data = np.asarray(data)
    if data.ndim != 1:
        raise ValueError(f"batchify expects a flat sequence of ids, got shape {data.shape}")
    nbatch = data.shape[0] // batch_size
    if nbatch == 0:
        raise ValueError(
            f"batchify: {data.shape[0]} tokens are fewer than batch_size={batch_size}, nothing to batch"
        )
    return data[: nbatch * batch_size].reshape(batch_size, nbatch).T


def get_batch(batches, i: int, bptt: int, device=None, dtype=None):
    """Input and target sequences starting at row ``i`` of a batchified array.

    With ``L = min(bptt, len(batches) - 1 - i)`` returns ``(data, target)``:
    ``data`` a Tensor of shape ``(L, bs)`` (rows ``i .. i+L-1``) and ``target`` a
    Tensor of shape ``(L*bs,)`` (rows ``i+1 .. i+L`` flattened row-major), both on
    ``device`` with ``dtype``.
    """
    batches = np.asarray(batches)
    if batches.ndim != 2:
        raise ValueError(f"get_batch expects a 2-D (nbatch, batch_size) array, got shape {batches.shape}")
    for name, v in (("i", i), ("bptt", bptt)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"get_batch {name} must be an integer, got {v!r}")
    if bptt < 1:
        raise ValueError(f"get_batch bptt must be at least 1, got {bptt}")
    seq_len = min(bptt, len(batches) - 1 - i)
    if i < 0 or seq_len < 1:
        raise ValueError(
            f"get_batch index i={i} out of range: needs 0 <= i < {len(batches) - 1} for {len(batches)} rows"
        )
    data = Tensor(batches[i: i + seq_len], device=device, dtype=dtype)
    target = Tensor(batches[i + 1: i + 1 + seq_len].flatten(), device=device, dtype=dtype)
    return data, target
