"""The array functions ops call (`array_api.*`): one list, two implementations.

`needle.backend_ndarray` (NDArray on cpu, cpu_numpy and cuda) and `needle.backend_numpy`
(numpy mode) both define every function named here, with the same semantics:
binary functions take arrays or Python/numpy scalars, broadcast like numpy and
promote like PyTorch (`needle.dtypes`); comparisons give bool arrays; `argmax`,
indices and `nonzero` are int64; reducing every axis without keepdims gives shape ().
A test checks that both modules provide all of them.
"""
from .primitives import PRIMITIVES

ARRAY_FUNCTIONS = (
    # creation and conversion
    "array", "arange", "empty", "full", "zeros", "zeros_like", "ones_like", "full_like", "empty_like", "astype",
    "device_of", "dtype_of", "to_numpy", "from_numpy_shared", "is_array", "dtype_name", "is_floating",
    # elementwise: one function per row of needle.primitives, and where
    *(p.function for p in PRIMITIVES), "where",
    # reductions and products
    "sum", "max", "min", "argmax", "matmul", "addmm",
    # layout
    "broadcast_to", "reshape", "transpose", "swapaxes", "ascontiguousarray", "as_strided", "element_strides",
    "flip", "pad", "stack", "unstack", "getitem", "setitem",
    # the memory behind an array: in-place writes are versioned by it (autograd's saved-value check)
    "storage", "owns_storage",
    # gather / scatter / one-hot on int64 indices
    "take_rows", "index_add_rows", "one_hot", "nonzero", "as_index", "wrap_index", "extremes",
    # input checks that read the data: host steps a compiled step repeats on every replay
    "check_data", "check_extremes", "check_ids",
    # what a compiled step (needle.compile) records: host work replayed each step, input checks
    "host_call", "is_recording", "validation", "constant_data",
    # host work on data, replayed by a compiled step: random draws, sampling, sort orders
    "random_draw", "multinomial", "argsort",
    # the optimizers' fused updates (in place; one kernel call where the device has one)
    "sgd_step", "sgd_step_many", "adam_step", "rmsprop_step", "adagrad_step", "adadelta_step",
    # ops' fused passes: a device's optional kernel (None where it has none, and the op runs its
    # array sequence, with the same bits)
    "device_col2im", "device_im2col", "device_lstm_gates", "device_lstm_gates_backward", "threshold_backward",
    "tanh_backward",
    "device_batch_norm",
    "device_batch_norm_backward", "device_nll_loss", "device_nll_loss_backward", "device_layer_norm",
    "device_layer_norm_backward", "device_softmax", "device_softmax_backward", "device_log_softmax",
    "device_log_softmax_backward", "device_log_softmax_nll_backward",
    "device_add_n",
    # shapes
    "prod", "broadcast_shapes",
)

DEVICE_FUNCTIONS = ("cpu", "default_device", "all_devices", "get_device", "registered_devices")


def missing_functions(module) -> list:
    """Names of the array interface that `module` does not define itself."""
    names = getattr(module, "__dict__", {})
    return [name for name in ARRAY_FUNCTIONS + DEVICE_FUNCTIONS if name not in names]
