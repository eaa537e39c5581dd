"""Module.state_dict / load_state_dict and ndl.save / ndl.load (safetensors files, atomic writes)."""
import os

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

import needle as ndl
import needle.nn as nn
import needle.optim as optim
from needle import serialization
from needle.models import ConvBN


def data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def make_model(seed=0, dtype="float32"):
    np.random.seed(seed)
    return nn.Sequential(nn.Linear(4, 8, dtype=dtype), nn.BatchNorm1d(8, dtype=dtype), nn.ReLU(),
                         nn.Linear(8, 3, bias=False, dtype=dtype))


KEYS = ["0.weight", "0.bias", "1.weight", "1.bias",
        "1.running_mean", "1.running_var", "3.weight"]

X_NP = data(10, 4, seed=1) + 0.5


def x_tensor(dtype="float32"):
    return ndl.Tensor(X_NP, dtype=dtype, requires_grad=False)


def train_a_bit(model, steps=3, dtype="float32"):
    """Move parameters (Adam) and running statistics away from their initial values."""
    opt = optim.Adam(model.parameters(), lr=0.05)
    y = ndl.Tensor(np.arange(10) % 3, requires_grad=False)
    model.train()
    for _ in range(steps):
        opt.reset_grad()
        nn.SoftmaxLoss()(model(x_tensor(dtype)), y).backward()
        opt.step()
    return model


def tensors_of(model):
    """Current values of the model's named tensors, by reaching into the modules directly."""
    lin0, bn, lin3 = model.modules[0], model.modules[1], model.modules[3]
    return {
        "0.weight": lin0.weight.numpy(), "0.bias": lin0.bias.numpy(),
        "1.weight": bn.weight.numpy(), "1.bias": bn.bias.numpy(),
        "1.running_mean": bn.running_mean.numpy(), "1.running_var": bn.running_var.numpy(),
        "3.weight": lin3.weight.numpy(),
    }


def assert_same_tensors(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def snapshot(model):
    return {k: v.copy() for k, v in tensors_of(model).items()}


def outputs(model, training):
    model.train() if training else model.eval()
    return model(x_tensor()).numpy()


# --------------------------------------------------------------------------- state_dict

def test_state_dict_keys_and_values_include_running_stats():
    model = train_a_bit(make_model())
    state = model.state_dict()
    assert list(state) == KEYS
    assert_same_tensors({k: v.numpy() for k, v in state.items()}, tensors_of(model))
    # the running statistics moved away from 0 / 1 during training
    assert not np.allclose(state["1.running_mean"].numpy(), 0)
    assert not np.allclose(state["1.running_var"].numpy(), 1)
    for t in state.values():
        assert isinstance(t, ndl.Tensor) and t.is_leaf() and not t.requires_grad


def test_state_dict_of_conv_bn_block():
    np.random.seed(0)
    block = ConvBN(3, 4, 3, 1)
    state = block.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias",
                           "1.running_mean", "1.running_var"]
    assert state["0.weight"].shape == (3, 3, 3, 4)
    np.testing.assert_array_equal(state["1.running_var"].numpy(), np.ones(4))


def test_load_state_dict_round_trip_gives_identical_outputs():
    source = train_a_bit(make_model(seed=0))
    target = make_model(seed=1)
    assert not np.allclose(outputs(source, False), outputs(target, False))
    target.load_state_dict(source.state_dict())
    assert_same_tensors(tensors_of(target), tensors_of(source))
    np.testing.assert_array_equal(outputs(target, False), outputs(source, False))
    np.testing.assert_array_equal(outputs(target, True), outputs(source, True))
    # the loaded tensors are copies: training the source further leaves the target alone
    before = snapshot(target)
    train_a_bit(source, steps=1)
    assert_same_tensors(snapshot(target), before)
    # loaded parameters are still the module's Parameters, trainable leaves
    assert all(isinstance(p, nn.Parameter) and p.is_leaf() and p.requires_grad for p in target.parameters())
    assert len(target.parameters()) == 5


def test_load_state_dict_converts_dtype_to_the_module_dtype():
    source = train_a_bit(make_model(seed=0, dtype="float64"), dtype="float64")
    target = make_model(seed=1, dtype="float32")
    target.load_state_dict(source.state_dict())
    for k, v in tensors_of(target).items():
        assert v.dtype == np.float32, k
        np.testing.assert_allclose(v, source.state_dict()[k].numpy(), rtol=1e-6)


def _bad_state(kind):
    state = train_a_bit(make_model(seed=0)).state_dict()
    if kind == "missing":
        del state["1.running_var"]
        return state, "1.running_var"
    if kind == "unexpected":
        state["2.weight"] = ndl.Tensor(np.ones(3), requires_grad=False)
        return state, "2.weight"
    # the mis-shaped tensor is the last key, after every valid one
    state["3.weight"] = ndl.Tensor(np.ones((8, 4)), requires_grad=False)
    return state, "3.weight"


@pytest.mark.parametrize("kind", ["missing", "unexpected", "misshaped"])
def test_load_state_dict_strict_errors_name_the_key_and_change_nothing(kind):
    state, key = _bad_state(kind)
    target = make_model(seed=1)
    before = snapshot(target)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        target.load_state_dict(state)
    assert_same_tensors(snapshot(target), before)


def test_load_state_dict_misshaped_error_names_both_shapes():
    state, key = _bad_state("misshaped")
    with pytest.raises(ValueError) as err:
        make_model(seed=1).load_state_dict(state)
    assert "(8, 4)" in str(err.value) and "(8, 3)" in str(err.value)


def test_load_state_dict_non_strict_ignores_missing_and_unexpected_keys():
    source = train_a_bit(make_model(seed=0))
    state = source.state_dict()
    del state["0.bias"]
    state["extra"] = ndl.Tensor(np.zeros(2), requires_grad=False)
    target = make_model(seed=1)
    kept_bias = target.modules[0].bias.numpy().copy()
    target.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(target.modules[0].bias.numpy(), kept_bias)
    np.testing.assert_array_equal(target.modules[0].weight.numpy(), source.modules[0].weight.numpy())
    np.testing.assert_array_equal(target.modules[1].running_var.numpy(), source.modules[1].running_var.numpy())
    # a wrong shape is still an error, and still changes nothing
    state, key = _bad_state("misshaped")
    before = snapshot(target)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        target.load_state_dict(state, strict=False)
    assert_same_tensors(snapshot(target), before)


# --------------------------------------------------------------------------- save / load

@pytest.mark.parametrize("as_path", [False, True], ids=["str", "pathlib"])
def test_save_load_round_trip(tmp_path, as_path):
    source = train_a_bit(make_model(seed=0))
    path = tmp_path / "model.safetensors"
    ndl.save(source.state_dict(), path if as_path else str(path))
    loaded = ndl.load(path if as_path else str(path))
    assert sorted(loaded) == sorted(KEYS)
    for t in loaded.values():
        assert isinstance(t, ndl.Tensor) and not t.requires_grad
        assert t.dtype == "float32"
    assert_same_tensors({k: v.numpy() for k, v in loaded.items()}, tensors_of(source))
    target = make_model(seed=2)
    target.load_state_dict(loaded)
    np.testing.assert_array_equal(outputs(target, False), outputs(source, False))
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_saved_file_is_readable_by_safetensors_torch(tmp_path):
    model = train_a_bit(make_model(seed=0))
    path = str(tmp_path / "m.safetensors")
    ndl.save(model.state_dict(), path)
    tensors = safetensors.torch.load_file(path)
    assert sorted(tensors) == sorted(KEYS)
    for k, v in tensors_of(model).items():
        assert tensors[k].dtype == torch.float32
        np.testing.assert_array_equal(tensors[k].numpy(), v, err_msg=k)


def test_float64_is_preserved_and_torch_written_files_load(tmp_path):
    model = make_model(seed=0, dtype="float64")
    path = str(tmp_path / "m64.safetensors")
    ndl.save(model.state_dict(), path)
    assert safetensors.torch.load_file(path)["0.weight"].dtype == torch.float64
    loaded = ndl.load(path)
    assert loaded["0.weight"].dtype == "float64"
    np.testing.assert_array_equal(loaded["0.weight"].numpy(), model.modules[0].weight.numpy())

    other = str(tmp_path / "from_torch.safetensors")
    w = torch.tensor(data(3, 2, seed=5), dtype=torch.float32)
    safetensors.torch.save_file({"w": w}, other)
    np.testing.assert_array_equal(ndl.load(other)["w"].numpy(), w.numpy())


def test_save_accepts_numpy_arrays_and_metadata(tmp_path):
    path = str(tmp_path / "a.safetensors")
    ndl.save({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, path, metadata={"epoch": "3"})
    np.testing.assert_array_equal(ndl.load(path)["a"].numpy(), np.arange(6).reshape(2, 3))
    assert serialization.load_metadata(path) == {"epoch": "3"}


# --------------------------------------------------------------------------- atomic writes

class _HalfWriter:
    """A file object that writes half of what it is given, then fails (a crash mid-write)."""

    def __init__(self, f):
        self.f = f

    def write(self, b):
        self.f.write(b[: len(b) // 2])
        self.f.flush()
        raise OSError("simulated crash mid-write")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False

    def __getattr__(self, name):
        return getattr(self.f, name)


def _crash_half_write(monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _HalfWriter(real(fd, *a, **k)))


def _crash_fsync(monkeypatch):
    def boom(fd):
        raise OSError("simulated crash before the data reached the disk")

    monkeypatch.setattr(os, "fsync", boom)


def _crash_rename(monkeypatch):
    def boom(src, dst, **kw):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", boom)


def _crash_serializer(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated serializer failure")

    monkeypatch.setattr(safetensors.numpy, "save", boom)


def _interrupt_write(monkeypatch):
    real = os.fdopen

    class Interrupted(_HalfWriter):
        def write(self, b):
            self.f.write(b[:10])
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Interrupted(real(fd, *a, **k)))


CRASHES = {
    "half_write": (_crash_half_write, OSError),
    "fsync": (_crash_fsync, OSError),
    "rename": (_crash_rename, OSError),
    "serializer": (_crash_serializer, RuntimeError),
    "keyboard_interrupt": (_interrupt_write, KeyboardInterrupt),
}


@pytest.mark.parametrize("crash", list(CRASHES))
def test_crash_during_save_keeps_the_previous_file(tmp_path, monkeypatch, crash):
    path = str(tmp_path / "ckpt.safetensors")
    good = make_model(seed=0)
    ndl.save(good.state_dict(), path)
    with open(path, "rb") as f:
        good_bytes = f.read()

    install, error = CRASHES[crash]
    newer = train_a_bit(make_model(seed=1))
    with monkeypatch.context() as m:
        install(m)
        with pytest.raises(error):
            ndl.save(newer.state_dict(), path)

    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temporary file left behind
    with open(path, "rb") as f:
        assert f.read() == good_bytes
    assert_same_tensors({k: v.numpy() for k, v in ndl.load(path).items()}, tensors_of(good))


@pytest.mark.parametrize("crash", ["half_write", "rename"])
def test_crash_during_first_save_leaves_no_file(tmp_path, monkeypatch, crash):
    install, error = CRASHES[crash]
    with monkeypatch.context() as m:
        install(m)
        with pytest.raises(error):
            ndl.save(make_model().state_dict(), str(tmp_path / "new.safetensors"))
    assert os.listdir(tmp_path) == []


def test_save_overwrites_an_existing_file(tmp_path):
    path = str(tmp_path / "ckpt.safetensors")
    ndl.save(make_model(seed=0).state_dict(), path)
    newer = train_a_bit(make_model(seed=1))
    ndl.save(newer.state_dict(), path)
    assert_same_tensors({k: v.numpy() for k, v in ndl.load(path).items()}, tensors_of(newer))
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_saved_file_gets_normal_permissions(tmp_path):
    """Like a file written with open(): umask-derived mode, not mkstemp's owner-only 0600."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    path = str(tmp_path / "m.safetensors")
    ndl.save(make_model().state_dict(), path)
    assert os.stat(path).st_mode & 0o777 == plain.stat().st_mode & 0o777
    # overwriting keeps the existing file's mode
    os.chmod(path, 0o640)
    ndl.save(make_model().state_dict(), path)
    assert os.stat(path).st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------- bad files

def _corrupt_truncated(good):
    return good[: len(good) // 2]


def _corrupt_header_only(good):
    return good[:8]


def _corrupt_garbage(good):
    return b"this is not a safetensors file at all"


def _corrupt_empty(good):
    return b""


def _corrupt_huge_header(good):
    return (10 ** 12).to_bytes(8, "little") + good[8:]


@pytest.mark.parametrize("corrupt", [_corrupt_truncated, _corrupt_header_only, _corrupt_garbage, _corrupt_empty,
                                     _corrupt_huge_header],
                         ids=["truncated", "header_only", "garbage", "empty", "huge_header"])
def test_loading_a_corrupt_file_raises_value_error_naming_the_path(tmp_path, corrupt):
    good_path = str(tmp_path / "good.safetensors")
    ndl.save(make_model().state_dict(), good_path)
    with open(good_path, "rb") as f:
        good = f.read()
    bad_path = str(tmp_path / "bad.safetensors")
    with open(bad_path, "wb") as f:
        f.write(corrupt(good))
    with pytest.raises(ValueError) as err:
        ndl.load(bad_path)
    assert bad_path in str(err.value)


def test_loading_an_unsupported_dtype_raises_value_error_naming_the_path(tmp_path):
    path = str(tmp_path / "bf16.safetensors")
    safetensors.torch.save_file({"w": torch.ones(2, dtype=torch.bfloat16)}, path)
    with pytest.raises(ValueError) as err:
        ndl.load(path)
    assert path in str(err.value)


def test_loading_a_missing_file_raises_file_not_found(tmp_path):
    path = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError) as err:
        ndl.load(path)
    assert path in str(err.value)


def test_save_rejects_non_dicts_and_non_string_keys(tmp_path):
    path = str(tmp_path / "x.safetensors")
    with pytest.raises(TypeError):
        ndl.save([ndl.Tensor(np.ones(2))], path)
    with pytest.raises(TypeError):
        ndl.save({1: ndl.Tensor(np.ones(2))}, path)
    assert os.listdir(tmp_path) == []


def test_save_to_an_unwritable_place_names_the_target_not_the_temporary(tmp_path):
    # a path under a regular file cannot be written even by root
    regular = tmp_path / "file"
    regular.write_text("not a folder")
    path = str(regular / "x.safetensors")
    with pytest.raises(OSError) as err:  # serialization.WriteError, errno ENOTDIR
        ndl.save({"w": ndl.Tensor(np.ones(2))}, path)
    assert path in str(err.value) and "Not a directory" in str(err.value)
    assert ".tmp-" not in str(err.value)
    # a folder as the target: the rename fails, still named by the target
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(OSError) as err:  # serialization.WriteError, errno EISDIR
        ndl.save({"w": ndl.Tensor(np.ones(2))}, str(folder))
    assert str(folder) in str(err.value) and ".tmp-" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["file", "folder"]  # no temporary left behind
