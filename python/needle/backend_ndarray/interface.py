"""The device kernel interface: every function a device module provides, written once.

NDArray computes only through these kernels, so a new device is one module that
defines them all plus one `register_device` call (see `device.py`). A test checks
that every registered device module provides every kernel listed here.

Conventions shared by all kernels
---------------------------------
* A *buffer* is an instance of the module's `Array(size, dtype)`: `size` elements of
  one storage dtype ("float32", "float64", "int64" or "bool"), with `size`, `dtype` (the
  name) and `ptr()` (its base address, the same for every view of it).
* An *operand* is what a kernel reads: either a compact buffer, read from its first
  element (the course's kernels take these), or a tuple `(buffer, shape, strides,
  offset)` describing a strided view of a buffer, strides counted in elements and
  possibly zero (broadcast) or negative (flip); `strides` is None when the view is the
  compact buffer itself, reshaped.
* `out` is always a compact buffer the kernel overwrites from element 0; its dtype is
  the result's (NDArray has already promoted the inputs, see `needle.dtypes`).
* `shape`, `strides` and `offset` arguments describe a view in elements.
* Arguments are positional (a recorder replays them as a tuple).
* Kernels assume valid input, except the index kernels, which raise IndexError for an
  index outside the indexed axis (they are the only kernels whose input is data).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Protocol, Sequence, Tuple

from ..primitives import PRIMITIVES, Primitive, kernel_names

Operand = Any  # a compact buffer, or (buffer, shape, strides or None, offset)


class DeviceKernels(Protocol):
    """The functions (and two attributes) of a device module."""

    __device_name__: str  # "cpu", "numpy", "cuda"
    __tile_size__: int  # the tile edge of matmul_tiled (the course reads it on every device)

    # --- buffers and transfers ---------------------------------------------------------
    def Array(self, size: int, dtype: str = "float32") -> Any:
        """A new buffer of `size` elements of `dtype` (contents undefined)."""

    def to_numpy(self, a: Any, shape: Sequence[int], strides: Sequence[int], offset: int) -> Any:
        """A numpy copy (of a's dtype) of the strided view of buffer `a`."""

    def from_numpy(self, a: Any, out: Any) -> None:
        """Copy numpy array `a` (any shape, out.size elements) into `out`, cast to out's dtype."""

    def fill(self, out: Any, val: Any) -> None:
        """Set every element of `out` to the scalar `val`."""

    # --- layout ------------------------------------------------------------------------
    def compact(self, a: Any, out: Any, shape: Sequence[int], strides: Sequence[int], offset: int) -> None:
        """Gather the strided view of `a` into `out` in row-major order, cast to out's dtype
        (this is also how an array changes dtype)."""

    def ewise_setitem(self, a: Any, out: Any, shape: Sequence[int], strides: Sequence[int], offset: int) -> None:
        """Scatter compact `a` (prod(shape) elements, row-major) into the strided view of `out`."""

    def scalar_setitem(self, size: int, val: Any, out: Any, shape: Sequence[int], strides: Sequence[int],
                       offset: int) -> None:
        """Set every element of the strided view of `out` (`size` elements) to `val`."""

    # --- elementwise primitives ------------------------------------------------------------
    # One kernel per form of each row of `needle.primitives.PRIMITIVES` (see `elementwise_kernels`):
    #   ewise_<name>(a, b, out)         out = f(a, b); a and b operands of one shape, out compact
    #   scalar_<name>(a, val, out)      out = f(a, val); val a Python scalar of the result's kind
    #   scalar_<reflected>(a, val, out) out = f(val, a)
    #   ewise_<name>(a, out)            out = f(a) for the unary rows (float functions get floats)
    # A device builds them from the table by family (`elementwise_kernels`), each kernel tagged
    # with `.primitive` and `.form` ("ewise", "scalar", "reverse", "unary").

    def ewise_where(self, cond: Operand, a: Operand, b: Operand, out: Any) -> None:
        """out = a where cond (bool) is true, else b; all three of out's shape"""

    # --- reductions over the trailing block of reduce_size elements of each output ---------
    def reduce_sum(self, a: Operand, out: Any, reduce_size: int) -> None:
        """out[k] = sum of block k (int64 out for bool/int64 input)"""
    def reduce_max(self, a: Operand, out: Any, reduce_size: int) -> None: """out[k] = max of block k"""
    def reduce_min(self, a: Operand, out: Any, reduce_size: int) -> None: """out[k] = min of block k"""
    def reduce_argmax(self, a: Operand, out: Any, reduce_size: int) -> None:
        """out[k] (int64) = position of the first maximum in block k"""

    # --- matrix products -----------------------------------------------------------------
    def matmul(self, a: Operand, b: Operand, out: Any, m: int, n: int, p: int, batch: int = 1) -> None:
        """`batch` products (m, n) @ (n, p) -> out (batch, m, p); operands may be transposed views,
        and batched ones views of one batch shape (prod = batch) with any batch strides"""

    # --- gather / scatter on int64 indices ---------------------------------------------------
    def take_rows(self, a: Any, indices: Operand, out: Any, row_size: int) -> None:
        """out[i] = a[indices[i]] for rows of `row_size` elements of compact `a`; negative
        indices count from the end; IndexError outside [-rows, rows)"""

    def index_add_rows(self, values: Any, indices: Operand, out: Any, row_size: int) -> None:
        """out[indices[i]] += values[i] (rows of row_size; repeated indices accumulate); in place"""

    def one_hot_rows(self, indices: Operand, out: Any, n: int) -> None:
        """out (k, n) = 0 except out[i, indices[i]] = 1; IndexError outside [0, n)"""


# The kernels every device module must define (matmul_tiled is the course's cpu extra).
REQUIRED_KERNELS: Tuple[str, ...] = tuple(
    name for name in DeviceKernels.__dict__
    if not name.startswith("_") and callable(DeviceKernels.__dict__[name])
) + kernel_names()

# The hooks a device module may add for needle.compile: `prepare(name, args)` gives a replayed
# call its launch with the views built once (or None); fusion reads the kernels' tags
# (`.primitive`, `.form`) to know what a recorded call computes.
OPTIONAL_HOOKS: Tuple[str, ...] = ("prepare",)

# Kernels a device may add: the optimizers' fused updates, in place, one call per parameter
#   sgd_step(param, grad, u, lr, momentum, damping, weight_decay, l2, mode, nesterov)
#   sgd_step_many(params, grads, states, lr, ...)  sgd_step on each triple of the three lists of
#             operands (a parameter group in one call; eager only: a compiled step records sgd_step)
#   adam_step(param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2, bias1, bias2,
#             eps, weight_decay, decay, l2, decoupled)
#   rmsprop_step(param, grad, v, a, b, lr, alpha, one_minus_alpha, eps, weight_decay, momentum, l2,
#                centered, use_momentum)
#   adagrad_step(param, grad, total, clr, eps, weight_decay, l2)
#   adadelta_step(param, grad, v, u, lr, rho, one_minus_rho, eps, weight_decay, l2)
# (operands for the arrays, Python floats for the hyperparameters, a compiled step's replay passing
# their current values; see `backend_ndarray.functions.sgd_step`/`adam_step` for the formulas,
# which a kernel must compute with the op sequence's bits). A device without them runs the op
# sequence in the array layer. They write several buffers, so `out_position` is None for them.
#
# And for needle.compile's accumulated products (compile/accumulate.py):
#   matmul_accumulate(a, b, out, m, n, p)   out (m, p) += a (m, n) @ b (n, p), float32, in place
#   accumulates_exactly(a, b, m, n, p)      whether that gives matmul-then-ewise_add's bits for
#                                           operands laid out as a and b: (shape, strides or None)
#
# And the optional kernels of `OptionalKernels` below (a signature each, so that a recorder knows
# which argument they write).
OPTIONAL_KERNELS: Tuple[str, ...] = ("sgd_step", "sgd_step_many", "adam_step", "rmsprop_step", "adagrad_step",
                                     "adadelta_step",
                                     "matmul_accumulate", "accumulates_exactly", "col2im", "im2col")



class OptionalKernels(Protocol):
    """Kernels a device may add, each with a way of its own in the array layer where it has not."""

    def col2im(self, cols: Operand, out: Any, shape: Tuple[int, int, int, int], kernel: Tuple[int, int],
               stride: Tuple[int, int], dilation: Tuple[int, int], top_left: Tuple[int, int]) -> None:
        """out (N, H, W, C) = the windows `cols` (shape (N, Ho, Wo, KH, KW, C)) summed back (conv's
        input gradient): each element is 0 plus its windows' entries added in kernel-offset order
        (u, then v), the padding dropped (top_left: the offsets of out in the padded frame) -- the
        bits of needle.ops._windows.col2im's array-level sequence, which a device without it runs"""

    def im2col(self, a: Operand, out: Any, shape: Tuple[int, int, int, int, int, int], stride: Tuple[int, int],
               dilation: Tuple[int, int], top_left: Tuple[int, int]) -> None:
        """out (shape = (N, Ho, Wo, KH, KW, C)) = every window of the (N, H, W, C) operand `a` padded
        with zeros (top_left: the padding before H and W): out[n, i, j, u, v, c] is
        a[n, i*sh + u*dh - top, j*sw + v*dw - left, c], 0 where that is outside a -- a copy, what
        needle.ops._windows.window_view's padded view holds, which a device without it compacts"""

    def lstm_gates(self, z: Operand, c0: Operand, h: Any, c: Any, hidden: int) -> None:
        """The LSTM cell's new states (needle.ops.lstm.LSTMGates) from z (B, 4H = 4 * hidden) and c0
        (B, H), row-major operands of one dtype (maybe slabs of larger arrays), into the compact
        buffers h and c: c = f * c0 + i * g, h = o * tanh(c), with i, f, o = sigmoid and g = tanh of
        z's four column blocks -- this device's sigmoid and tanh primitives' values and that order
        of operations, the bits of the array-level sequence (but for a nan's sign)"""

    def lstm_gates_backward(self, gh: Operand, gc: Operand, z: Operand, c0: Operand, c: Operand, grad_z: Any,
                            grad_c0: Any, hidden: int, has_h: bool, has_c: bool) -> None:
        """The LSTM cell's gradient (needle.ops.lstm.LSTMGatesGrad) from row-major operands (B, H =
        hidden) of one dtype but z (B, 4H), into compact grad_z (B, 4H) and grad_c0 (B, H): with i,
        f, g, o the activations of z's blocks (lstm_gates), s_x = sigmoid(-z_x), t = tanh(c) and
        a = gc + (gh * o) * (-(t^2) + 1) (either term alone when has_c / has_h is False; gh, gc are
        then any operand), grad_z's blocks (a * g) * (i * s_i), (a * c0) * (f * s_f),
        (a * i) * (-(g^2) + 1), (gh * t) * (o * s_o) (0 without gh), grad_c0 = a * f -- in that
        order of operations, the bits of the array-level sequence (but for a nan's sign)"""

    def batch_norm(self, x: Any, w: Any, b: Any, out: Any, mean: Any, var: Any, eps: float) -> None:
        """Training-mode batch norm over axis 0 of a compact (N, C) x, C >= 2, float32 or float64,
        w and b C values: mean (C) = sum(x, 0) / N, var (C) = sum(c * c, 0) / N with c = x - mean,
        out (N, C) = w * (c / sqrt(var + eps)) + b, each sum from 0 adding the rows in order, N and
        eps in the data's dtype -- the bits of needle.ops.normalization.BatchNorm's array sequence (but
        for a nan's sign)"""

    def batch_norm_backward(self, g: Any, x: Any, w: Any, mean: Any, var: Any, eps: float, grad_x: Any,
                            grad_w: Any, grad_b: Any) -> None:
        """BatchNorm's gradient (needle.ops.normalization.BatchNormGrad) for compact (N, C) g and x,
        C >= 2, given the batch mean and variance (C each), with inv_std = (var + eps) ** -0.5 as
        this device's add and power of -0.5 compute it and
        x_hat = (x + (-mean)) * inv_std, grad_b = sum(g, 0), grad_w = sum(g * x_hat, 0) (from 0,
        rows in order) and grad_x = ((w * inv_std) / N) * ((g * N + (-grad_b)) + x_hat * (-grad_w))
        -- the bits of the array-level sequence (but for a nan's sign)"""

    def layer_norm(self, x: Any, w: Any, b: Any, out: Any, mean: Any, var: Any, eps: float) -> None:
        """LayerNorm over the last axis of a compact (R, d) x, float32 or float64, w and b d values:
        per row mean = sum(x) / d, c = x + (-mean), var = sum(c * c) / d, out = ((c / sqrt(var + eps))
        * w) + b, each sum numpy's over a row (0 plus its pairwise sum), d and eps in the data's dtype
        -- the bits of needle.ops.normalization.LayerNorm's array sequence (but for a nan's sign)"""

    def layer_norm_backward(self, g: Any, x: Any, w: Any, mean: Any, std: Any, half_power: Any, grad_c: Any,
                            grad_mean: Any, grad_w: Any, grad_b: Any) -> None:
        """LayerNorm's gradient (needle.ops.normalization.LayerNormGrad) for compact (R, d) g and x,
        given per row the mean, std = (var + eps) ** 0.5 and half_power = (var + eps) ** -0.5 * 0.5:
        grad_c (R, d), grad_mean (R), grad_w and grad_b (d) as that op's docstring says -- the bits
        of its array sequence (but for a nan's sign)"""

    def softmax_shift(self, x: Any, out: Any, d: int) -> None:
        """out = x - (its row's maximum) over rows of d of a compact x: softmax's first step (a row
        holding a nan may have any maximum: its sum, so the whole row, is nan; the sign of a zero
        maximum is either, exp(+-0) being 1)"""

    def softmax_normalize(self, e: Any, out: Any, d: int) -> None:
        """out = e / (the row's sum as numpy adds it: 0 plus its pairwise sum) over rows of d of a
        compact e; out may be e"""

    def softmax_backward(self, g: Any, s: Any, out: Any, d: int) -> None:
        """out = s * (g + (-sum(g * s))) per row of d of compact g and s, the sum numpy's (0 plus the
        pairwise sum of the products) -- the bits of needle.ops.reduction.SoftmaxGrad's sequence (but
        for a nan's sign)"""

    def log_softmax(self, x: Any, out: Any, d: int) -> None:
        """out = (x - m) - log(sum(exp(x - m))) per row of d of a compact x, m the row's maximum --
        this device's max, subtract, exp, row sum and log (numpy's, on the cpu), the bits of
        needle.ops.reduction.LogSoftmax's array sequence"""

    def log_softmax_backward(self, g: Any, y: Any, out: Any, d: int) -> None:
        """out = g + exp(y) * (-sum(g)) per row of d of compact g and y (the sum of the row, the
        exponential: this device's) -- the bits of needle.ops.reduction.LogSoftmaxGrad's sequence
        (but for a nan's sign)"""

    def log_softmax_nll_backward(self, ids: Any, g: Any, y: Any, out: Any, classes: int) -> None:
        """out (B, classes) = v + e at [i, ids[i]] and e + 0 elsewhere, e = exp(y) * (-(v + 0)) and
        v = -(g / B), over a compact y (B, classes), g one element, ids B int64 class ids
        (IndexError naming one outside [0, classes)) -- the bits of log_softmax_backward on
        nll_loss_backward's rows (their sums: v + 0), without those rows (but for a nan's sign)"""

    def nll_loss(self, log_probs: Any, ids: Any, out: Any, classes: int) -> None:
        """out (one element) = -(s) / B, s the sum of where(one_hot(ids), log_probs, 0) over the compact
        (B, classes) log_probs flat as numpy sums it (0 plus its pairwise sum), ids B int64 class ids:
        IndexError naming one outside [0, classes) -- the bits of needle.ops.loss.NLLLoss's array
        sequence"""

    def nll_loss_backward(self, ids: Any, g: Any, out: Any, classes: int) -> None:
        """out (B, classes) = 0 but -(g / B) at [i, ids[i]], g one element (NLLLoss's gradient from its
        adjoint; IndexError naming a class id outside [0, classes))"""

    def add_n(self, arrays: Sequence[Any], out: Any) -> None:
        """out = ((a0 + a1) + a2) + ... elementwise over compact buffers of out's size and dtype (two or
        more): each element's additions in that order -- the bits of the left fold of adds"""

    def threshold_backward(self, g: Any, x: Any, out: Any, threshold: Any) -> None:
        """out = 0 where x <= threshold, else g (ReLU's gradient; a nan x passes g on): compact g,
        x and out of one size, g and out of one dtype -- the bits of where(x <= threshold, 0, g)"""

    def tanh_backward(self, g: Any, t: Any, out: Any) -> None:
        """out = g * (1 - t * t) (tanh's gradient from its output t): compact g, t and out of one size
        and dtype, computed as g * ((-(t * t)) + 1) -- the bits of that sequence of array operations"""


Family = Callable[[Primitive], Callable]


def elementwise_kernels(ewise: Family, scalar: Family, reverse: Family, unary: Family) -> Dict[str, Callable]:
    """{kernel name: kernel} for every primitive, each made by the device's family for its form
    (a family takes the Primitive row and returns the kernel) and tagged `.primitive`/`.form`.
    A device installs them with `globals().update(...)` and may then replace a few by hand."""
    kernels: Dict[str, Callable] = {}
    for p in PRIMITIVES:
        forms = [("unary", unary)] if p.arity == 1 else [("ewise", ewise), ("scalar", scalar)] + (
            [("reverse", reverse)] if p.reflected else [])
        for (form, family), name in zip(forms, p.kernels):
            kernel = family(p)
            kernel.__name__ = kernel.__qualname__ = name
            kernel.primitive, kernel.form = p, form  # type: ignore[attr-defined]  # tags, read with getattr
            kernels[name] = kernel
    return kernels


# Optional kernels that write several buffers (no single `out` to name)
WRITES_SEVERAL: Tuple[str, ...] = ("lstm_gates", "lstm_gates_backward", "batch_norm", "batch_norm_backward",
                                   "layer_norm", "layer_norm_backward")


def out_position(name: str) -> Optional[int]:
    """The position of the buffer kernel `name` writes (its `out` argument); -1 for a kernel that
    writes none (to_numpy); None for a name outside the interface or one that writes several
    buffers (then any buffer may be written)."""
    if name in _PRIMITIVE_KERNELS:
        return _PRIMITIVE_KERNELS[name]
    if name in WRITES_SEVERAL:
        return None
    kernel = DeviceKernels.__dict__.get(name) or OptionalKernels.__dict__.get(name)
    if kernel is None:
        return None
    names = list(inspect.signature(kernel).parameters)[1:]  # without self
    return names.index("out") if "out" in names else -1


_PRIMITIVE_KERNELS = {name: (1 if p.arity == 1 else 2) for p in PRIMITIVES for name in p.kernels}
_FORM_PARAMETERS = {"unary": ("a", "out"), "ewise": ("a", "b", "out"), "scalar": ("a", "val", "out"),
                    "reverse": ("a", "val", "out")}


def kernel_parameters(name: str) -> Tuple[str, ...]:
    """The parameter names of kernel `name` of the interface, in order."""
    for p in PRIMITIVES:
        if name in p.kernels:
            form = "unary" if p.arity == 1 else ("ewise", "scalar", "reverse")[p.kernels.index(name)]
            return _FORM_PARAMETERS[form]
    protocol = DeviceKernels if name in DeviceKernels.__dict__ else OptionalKernels
    return tuple(x for x in inspect.signature(getattr(protocol, name)).parameters if x != "self")
REQUIRED_ATTRIBUTES: Tuple[str, ...] = ("__device_name__", "__tile_size__")


def missing_kernels(module: Any) -> list:
    """The names of the interface a device module lacks (empty when it is complete)."""
    return [name for name in REQUIRED_KERNELS + REQUIRED_ATTRIBUTES if not hasattr(module, name)]
