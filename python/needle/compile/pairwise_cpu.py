"""numpy's pairwise summation of a contiguous row, as a numba function for the fused cpu loops.

`np.add.reduce` over the last axis of a compact array (what the cpu device's `reduce_sum`
calls) starts each row's result at the identity 0 and adds the row's pairwise sum to it.
The pairwise sum, described in numpy's source (`pairwise_sum` in its loops): a row of
fewer than 8 elements is added left to right; up to 128 elements, eight partial sums
take every eighth element, are combined as ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)), and the
elements left over after the last full block of 8 are added in order; a longer row is
split at n/2 rounded down to a multiple of 8 and the two halves' pairwise sums are added.
Doing the same IEEE operations in the same order (numba neither reassociates nor
contracts them without fastmath) gives the same bits, float32 and float64; the tests in
tests/test_compile_rowsum.py compare against numpy on rows of every length 1..300 and
longer ones.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["pairwise_sum", "row_sum", "row_max", "row_min"]


@numba.njit(cache=True, nogil=True, inline="always")
def _block_sum(a, lo, n):  # pragma: no cover - compiled by numba
    """numpy's pairwise sum of a[lo:lo + n] for n <= 128 (no further split)."""
    if n < 8:
        res = -a.dtype.type(0)  # -0.0: adding it first changes no value
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    blocks = n - n % 8
    i = 8
    while i < blocks:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True, inline="always")
def pairwise_sum(a, lo, n):  # pragma: no cover - compiled by numba
    """numpy's pairwise sum of a[lo:lo + n] (a 1-D array), in its order: the recursion over
    halves walked with an explicit stack (numba cannot cache a recursive function that another
    cached module calls)."""
    if n <= 128:
        return _block_sum(a, lo, n)
    return _split_sum(a, lo, n)


@numba.njit(cache=True, nogil=True)
def _split_sum(a, lo, n):  # pragma: no cover - compiled by numba
    """pairwise_sum for n > 128 (its own function: the stack's allocations kept out of the
    short rows' path, which they slowed by half)."""
    # frames: the range, whether its left half is summed, that half's sum
    los = np.empty(64, np.int64)
    ns = np.empty(64, np.int64)
    left_done = np.zeros(64, np.bool_)
    left = np.empty(64, a.dtype)
    top = 0
    los[0], ns[0], left_done[0] = lo, n, False
    value = a.dtype.type(0)
    while True:
        m = ns[top]
        if m <= 128:  # a leaf: its sum goes to the frame below
            value = _block_sum(a, los[top], m)
            top -= 1
            while top >= 0 and left_done[top]:  # both halves summed: this frame is done too
                value = left[top] + value
                top -= 1
            if top < 0:
                return value
            left_done[top] = True  # the left half of `top` is summed: on to its right half
            left[top] = value
            half = ns[top] // 2
            half -= half % 8
            los[top + 1], ns[top + 1], left_done[top + 1] = los[top] + half, ns[top] - half, False
            top += 1
        else:  # split: the left half first
            half = m // 2
            half -= half % 8
            los[top + 1], ns[top + 1], left_done[top + 1] = los[top], half, False
            top += 1


@numba.njit(cache=True, nogil=True, inline="always")
def row_sum(a):  # pragma: no cover - compiled by numba
    """`np.add.reduce` of a contiguous 1-D row: the identity 0 plus the pairwise sum."""
    return a.dtype.type(0) + pairwise_sum(a, 0, a.shape[0])


@numba.njit(cache=True, nogil=True, inline="always")
def row_max(a):  # pragma: no cover - compiled by numba
    """(the largest value of a non-empty 1-D row, whether it is surely `np.maximum.reduce`'s bits).

    A largest value other than 0 has one bit pattern wherever it sits; a row whose largest value
    is 0 may hold both 0.0 and -0.0, and a row with a nan may hold nans of either sign, where
    numpy's SIMD loop returns the one its order meets (the caller asks numpy for those rows)."""
    m = a[0]
    exact = m == m
    for i in range(1, a.shape[0]):
        v = a[i]
        exact &= v == v
        if v > m:
            m = v
    return m, exact and m != 0


@numba.njit(cache=True, nogil=True, inline="always")
def row_min(a):  # pragma: no cover - compiled by numba
    """row_max's counterpart for `np.minimum.reduce`."""
    m = a[0]
    exact = m == m
    for i in range(1, a.shape[0]):
        v = a[i]
        exact &= v == v
        if v < m:
            m = v
    return m, exact and m != 0
