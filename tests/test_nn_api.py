"""PyTorch's Module API on needle (containers, names, state_dict, repr, train/eval, apply, ...),
needle.nn.init and needle.nn.utils' gradient clipping -- each checked against PyTorch on the
same model or the same shapes."""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

import needle as ndl
from needle import nn
from needle.nn import init as nn_init

TNN = torch.nn


# ----------------------------------------------------------------------------- twin models

def build(lib, with_extras=True):
    """The same architecture in needle (lib=nn) and PyTorch (lib=torch.nn): buffers first (PyTorch
    lists a module's own tensors before its children's), then ModuleList, ModuleDict, Sequential,
    ParameterList/Dict."""
    is_torch = lib is TNN
    zeros = (lambda *s: torch.zeros(*s)) if is_torch else (lambda *s: ndl.zeros(*s))

    class Block(lib.Module):
        def __init__(self):
            super().__init__()
            self.conv = lib.Conv2d(3, 4, 3, padding=1)
            self.norm = lib.BatchNorm2d(4)
            self.act = lib.ReLU()

    class Net(lib.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", zeros(3))
            self.register_buffer("scratch", zeros(2), persistent=False)
            self.embed = lib.Embedding(10, 4)
            self.blocks = lib.ModuleList([Block() for _ in range(2)])
            self.heads = lib.ModuleDict({"a": lib.Linear(4, 2), "b": lib.Linear(4, 3, bias=False)})
            self.mlp = lib.Sequential(lib.Linear(4, 8), lib.GELU(), lib.Sequential(lib.Dropout(0.1), lib.Linear(8, 4)))
            if with_extras:
                self.scales = lib.ParameterList([lib.Parameter(zeros(2)), lib.Parameter(zeros(3))])
                self.gates = lib.ParameterDict({"g": lib.Parameter(zeros(4))})

    return Net()


def names(pairs):
    return [n for n, _ in pairs]


def test_parameter_buffer_and_module_names_match_torch():
    mine, ref = build(nn), build(TNN)
    assert names(mine.named_parameters()) == names(ref.named_parameters())
    assert names(mine.named_buffers()) == [n for n in names(ref.named_buffers()) if "num_batches_tracked" not in n]
    assert names(mine.named_modules()) == names(ref.named_modules())
    assert names(mine.named_children()) == names(ref.named_children())
    assert [type(m).__name__ for m in mine.modules()] == [type(m).__name__ for m in ref.modules()]
    assert [type(m).__name__ for m in mine.children()] == [type(m).__name__ for m in ref.children()]
    # needle's BatchNorm keeps no batch counter: the only keys PyTorch has beyond needle's
    torch_keys = [k for k in ref.state_dict() if not k.endswith("num_batches_tracked")]
    assert list(mine.state_dict()) == torch_keys
    assert "scratch" not in mine.state_dict() and "scratch" in dict(mine.named_buffers())
    for key, value in mine.state_dict().items():
        theirs = tuple(ref.state_dict()[key].shape)
        if isinstance(mine.get_submodule(key.rpartition(".")[0]), nn.Linear):  # the course's (in, out), (1, out)
            assert value.shape in (theirs[::-1], (1,) + theirs), key
        else:
            assert value.shape == theirs, key


def test_named_parameters_prefix_recurse_and_duplicates_match_torch():
    for lib in (nn, TNN):
        shared = lib.Linear(2, 2)
        lib_model = lib.Sequential(shared, lib.ReLU(), shared)
        if lib is nn:
            mine = lib_model
        else:
            ref = lib_model
    assert names(mine.named_parameters(prefix="model")) == names(ref.named_parameters(prefix="model"))
    assert names(mine.named_parameters(remove_duplicate=False)) == names(ref.named_parameters(remove_duplicate=False))
    assert names(mine.named_modules(prefix="m")) == names(ref.named_modules(prefix="m"))
    assert names(mine.named_modules(remove_duplicate=False)) == names(ref.named_modules(remove_duplicate=False))
    assert len(mine.parameters()) == 2
    lin, tlin = nn.Linear(2, 2), TNN.Linear(2, 2)
    assert names(lin.named_parameters(recurse=False)) == names(tlin.named_parameters(recurse=False))
    assert names(build(nn).named_parameters(recurse=False)) == names(build(TNN).named_parameters(recurse=False))


def test_own_tensors_after_children_keep_attribute_order():
    """The course's rule (parameters() in attribute order) where PyTorch lists a module's own
    parameters first: the same names, another order, only for modules that mix them so."""
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1)
            self.w = nn.Parameter(ndl.zeros(1))

    class TMixed(TNN.Module):
        def __init__(self):
            super().__init__()
            self.lin = TNN.Linear(1, 1)
            self.w = TNN.Parameter(torch.zeros(1))

    mine, ref = Mixed(), TMixed()
    assert names(mine.named_parameters()) == ["lin.weight", "lin.bias", "w"]
    assert names(ref.named_parameters()) == ["w", "lin.weight", "lin.bias"]
    assert sorted(mine.state_dict()) == sorted(ref.state_dict())


def test_parameters_is_a_list_that_next_also_walks():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    params = model.parameters()
    assert isinstance(params, list) and len(params) == 4 and params[0] is model.modules[0].weight
    assert next(params) is params[0] and next(params) is params[1]
    assert next(model.parameters()) is params[0]  # a fresh call starts again, as a new generator
    assert [p.shape for p in params] == [(2, 3), (1, 3), (3, 1), (1, 1)]  # a for loop walks all
    rest = [next(params), next(params)]
    assert rest[1] is params[3]
    with pytest.raises(StopIteration):
        next(params)
    assert next(iter(model.named_parameters()))[0] == "0.weight"
    ndl.optim.SGD(model.parameters(), lr=0.1)  # the optimizers take it as before
    assert params + model.buffers() == params


# ----------------------------------------------------------------------------- state_dict

def test_state_dict_shares_memory_with_the_parameters():
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    sd = model.state_dict()
    assert isinstance(sd, OrderedDict)
    assert all(not t.requires_grad and t.is_leaf() for t in sd.values())
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    sd["0.weight"].copy_(ndl.Tensor(w))  # PyTorch's idiom for loading one weight
    np.testing.assert_array_equal(model.modules[0].weight.numpy(), w)
    # training changes the values the dict holds (they alias, as PyTorch's do)
    x = ndl.Tensor(np.random.randn(5, 3), dtype="float32", requires_grad=False)
    opt = ndl.optim.SGD(model.parameters(), lr=0.5)
    model(x).sum().backward()
    opt.step()
    np.testing.assert_array_equal(sd["0.weight"].numpy(), model.modules[0].weight.numpy())
    np.testing.assert_array_equal(sd["1.running_mean"].numpy(), model.modules[1].running_mean.numpy())
    assert not np.array_equal(sd["0.weight"].numpy(), w)
    kept = model.state_dict(keep_vars=True)
    assert kept["0.weight"] is model.modules[0].weight and isinstance(kept["0.weight"], nn.Parameter)
    assert list(model.state_dict(prefix="net.")) == ["net." + k for k in sd]


def test_torch_state_dict_alias_semantics_for_reference():
    """What the needle test above mirrors, on PyTorch itself."""
    model = TNN.Sequential(TNN.Linear(3, 2))
    sd = model.state_dict()
    with torch.no_grad():
        sd["0.weight"].copy_(torch.ones(2, 3))
    assert torch.equal(model[0].weight, torch.ones(2, 3))


def test_load_state_dict_returns_missing_and_unexpected_keys_like_torch():
    mine, ref = build(nn, with_extras=False), build(TNN, with_extras=False)
    state = {k: v for k, v in mine.state_dict().items() if k != "heads.a.bias"}
    state["extra.weight"] = ndl.zeros(2)
    result = mine.load_state_dict(state, strict=False)
    t_state = {k: v for k, v in ref.state_dict().items() if k != "heads.a.bias"}
    t_state["extra.weight"] = torch.zeros(2)
    t_result = ref.load_state_dict(t_state, strict=False)
    assert result.missing_keys == t_result.missing_keys
    assert result.unexpected_keys == t_result.unexpected_keys
    assert result == (result.missing_keys, result.unexpected_keys)
    assert repr(mine.load_state_dict(mine.state_dict())) == repr(ref.load_state_dict(ref.state_dict()))
    with pytest.raises(RuntimeError, match='Missing key.*"heads.a.bias"'):
        mine.load_state_dict(state)
    with pytest.raises(ValueError, match='Unexpected key.*"extra.weight"'):  # a ValueError too
        mine.load_state_dict(state)
    with pytest.raises(RuntimeError):
        ref.load_state_dict(t_state)


def test_load_state_dict_shape_mismatch_raises_even_when_not_strict():
    model = nn.Sequential(nn.Linear(3, 2))
    before = model.modules[0].weight.numpy().copy()
    state = {"0.weight": np.ones((3, 3), np.float32), "0.bias": np.ones((1, 2), np.float32)}
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.weight.*\(3, 3\).*\(3, 2\)"):
        model.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(model.modules[0].weight.numpy(), before)  # nothing was loaded
    with pytest.raises(RuntimeError, match="size mismatch"):
        TNN.Linear(3, 2).load_state_dict({"weight": torch.ones(3, 3), "bias": torch.ones(2)}, strict=False)
    with pytest.raises(TypeError, match="dict of tensors"):
        model.load_state_dict([("0.weight", before)])


def test_non_persistent_buffers_move_with_to_but_are_not_saved():
    m = nn.Module()
    m.register_buffer("saved", ndl.zeros(2))
    m.register_buffer("scratch", ndl.ones(2), persistent=False)
    m.register_buffer("empty", None)
    assert list(m.state_dict()) == ["saved"]
    assert names(m.named_buffers()) == ["saved", "scratch"]
    m.double()
    assert m.scratch.dtype == "float64" and m.saved.dtype == "float64"
    assert m.load_state_dict({"saved": np.ones(2)}) == ([], [])
    m.register_buffer("scratch", m.scratch, persistent=True)  # re-registered: saved now
    assert list(m.state_dict()) == ["saved", "scratch"]


@pytest.mark.parametrize("call, error", [
    (lambda m: m.register_buffer(3, None), TypeError),
    (lambda m: m.register_buffer("", None), KeyError),
    (lambda m: m.register_buffer("a.b", None), KeyError),
    (lambda m: m.register_buffer("training", None), KeyError),
    (lambda m: m.register_buffer("forward", None), KeyError),
    (lambda m: m.register_buffer("lin", None), KeyError),
    (lambda m: m.register_parameter("p", "not a parameter"), TypeError),
    (lambda m: m.register_parameter("a.b", None), KeyError),
    (lambda m: m.register_parameter("lin", None), KeyError),
    (lambda m: m.add_module("x", 3), TypeError),
    (lambda m: m.add_module("a.b", None), KeyError),
])
def test_registration_errors_match_torch(call, error):
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1)

    class THolder(TNN.Module):
        def __init__(self):
            super().__init__()
            self.lin = TNN.Linear(1, 1)

    with pytest.raises(error):
        call(THolder())
    with pytest.raises(error):
        call(Holder())


def test_register_parameter_and_buffer_types():
    m = nn.Module()
    with pytest.raises(TypeError, match="nn.Parameter"):
        m.register_parameter("w", ndl.zeros(2))  # a plain Tensor would be a buffer
    with pytest.raises(TypeError, match="Tensor or None"):
        m.register_buffer("b", np.zeros(2))
    m.register_parameter("w", nn.Parameter(ndl.zeros(2)))
    m.register_parameter("none", None)
    m.add_module("child", nn.Linear(2, 1))
    assert names(m.named_parameters()) == ["w", "child.weight", "child.bias"]
    assert m.get_submodule("child") is m.child and m.get_parameter("child.bias") is m.child.bias
    with pytest.raises(KeyError):
        m.register_buffer("w", ndl.zeros(2))  # already a parameter


# ----------------------------------------------------------------------------- containers

def apply_ops(lib, make):
    """The same list operations on a needle and a torch ModuleList; the state_dict keys after."""
    ml = lib.ModuleList([make(lib, 1), make(lib, 2)])
    ml.append(make(lib, 3))
    ml.extend([make(lib, 4), make(lib, 5)])
    ml.insert(1, make(lib, 6))
    ml += [make(lib, 7)]
    del ml[0]
    popped = ml.pop(2)
    ml[0] = make(lib, 8)
    return ml, popped


def lin(lib, n):
    return lib.Linear(n, 1)


def test_module_list_behaves_like_torchs():
    mine, mine_popped = apply_ops(nn, lin)
    ref, ref_popped = apply_ops(TNN, lin)
    assert list(mine.state_dict()) == list(ref.state_dict())
    assert [m.in_features for m in mine] == [m.in_features for m in ref]
    assert mine_popped.in_features == ref_popped.in_features
    assert len(mine) == len(ref) == 5
    assert mine[-1].in_features == ref[-1].in_features
    sliced, t_sliced = mine[1:4], ref[1:4]
    assert isinstance(sliced, nn.ModuleList) and list(sliced.state_dict()) == list(t_sliced.state_dict())
    assert mine[2] in mine and nn.Linear(1, 1) not in mine
    assert list((mine + sliced).state_dict()) == list((ref + t_sliced).state_dict())
    with pytest.raises(IndexError):
        mine[5]
    with pytest.raises(IndexError):
        ref[5]
    with pytest.raises(TypeError, match="not a needle.nn.Module"):
        mine.append(3)
    with pytest.raises(NotImplementedError, match="forward"):
        mine(ndl.zeros(1, 1))


def test_module_list_and_dict_inside_a_model_are_trained_and_switched():
    model = nn.Module()
    model.layers = nn.ModuleList([nn.Dropout(0.5), nn.Linear(2, 2)])
    model.heads = nn.ModuleDict({"out": nn.Dropout(0.5)})
    assert names(model.named_parameters()) == ["layers.1.weight", "layers.1.bias"]
    model.eval()
    assert not model.layers[0].training and not model.heads["out"].training
    model.train()
    assert model.layers[0].training and model.heads.out.training


def test_module_dict_behaves_like_torchs():
    def make(lib):
        md = lib.ModuleDict({"b": lib.Linear(1, 1), "a": lib.ReLU()})
        md.update([("c", lib.Linear(2, 1))])
        md["d"] = lib.Linear(3, 1)
        md.update({"b": lib.Linear(4, 1)})
        del md["a"]
        return md

    mine, ref = make(nn), make(TNN)
    assert list(mine.keys()) == list(ref.keys()) and list(mine) == list(ref)
    assert list(mine.state_dict()) == list(ref.state_dict())
    assert mine.b.in_features == 4 and mine["b"] is mine.b
    assert "c" in mine and "a" not in mine and len(mine) == len(ref) == 3
    assert [k for k, _ in mine.items()] == [k for k, _ in ref.items()]
    assert mine.pop("c").in_features == ref.pop("c").in_features
    with pytest.raises(KeyError):
        mine["zz"]
    with pytest.raises(AttributeError):
        _ = mine.zz
    with pytest.raises(TypeError):
        mine.update(3)
    with pytest.raises(TypeError):
        mine["e"] = "not a module"
    mine.clear()
    assert len(mine) == 0 and mine.state_dict() == {}


def test_parameter_list_and_dict_make_parameters_like_torch():
    pl = nn.ParameterList([ndl.zeros(2), nn.Parameter(ndl.ones(3))])
    tpl = TNN.ParameterList([torch.zeros(2), TNN.Parameter(torch.ones(3))])
    assert isinstance(pl[0], nn.Parameter) and isinstance(tpl[0], TNN.Parameter)
    pl.append(ndl.zeros(4))
    tpl.append(torch.zeros(4))
    assert names(pl.named_parameters()) == names(tpl.named_parameters())
    assert len(pl) == 3 and pl[-1].shape == (4,)
    pd = nn.ParameterDict({"w": ndl.zeros(2)})
    tpd = TNN.ParameterDict({"w": torch.zeros(2)})
    pd["v"] = ndl.ones(1)
    tpd["v"] = torch.ones(1)
    assert list(pd.state_dict()) == list(tpd.state_dict()) and isinstance(pd.v, nn.Parameter)
    source = ndl.ones(2)
    wrapped = nn.ParameterList([source])[0]
    wrapped.data = wrapped.data * 0 + 5  # a Parameter over the tensor's data, as PyTorch's
    assert wrapped.requires_grad


def test_sequential_container_api_matches_torch():
    def make(lib):
        seq = lib.Sequential(lib.Linear(1, 2), lib.ReLU(), lib.Linear(2, 3))
        seq.append(lib.Linear(3, 4))
        seq.insert(1, lib.Tanh())
        seq.extend([lib.Linear(4, 5)])
        return seq

    mine, ref = make(nn), make(TNN)
    assert list(mine.state_dict()) == list(ref.state_dict())
    assert len(mine) == len(ref) == 6
    assert [type(m).__name__ for m in mine] == [type(m).__name__ for m in ref]
    assert type(mine[1]).__name__ == "Tanh" and mine[-1] is mine.modules[-1]
    part, t_part = mine[2:5], ref[2:5]
    assert isinstance(part, nn.Sequential) and list(part.state_dict()) == list(t_part.state_dict())  # keys kept
    x = np.random.RandomState(0).randn(2, 2).astype(np.float32)
    np.testing.assert_array_equal(part(ndl.Tensor(x)).numpy(), mine.modules[4](mine.modules[3](
        mine.modules[2](ndl.Tensor(x)))).numpy())
    assert mine.pop(0).in_features == ref.pop(0).in_features
    del mine[0]
    del ref[0]
    assert list(mine.state_dict()) == list(ref.state_dict())  # renumbered, as PyTorch does
    combined, t_combined = mine + mine, ref + ref
    assert list(combined.state_dict()) == list(t_combined.state_dict())
    with pytest.raises(IndexError):
        mine[10]
    with pytest.raises(TypeError, match="not a needle.nn.Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_sequential_modules_is_the_course_tuple_and_callable():
    a, b = nn.Linear(2, 2), nn.ReLU()
    seq = nn.Sequential(a, nn.Sequential(b))
    assert isinstance(seq.modules, tuple) and seq.modules[0] is a and len(seq.modules) == 2
    assert seq.modules == (a, seq.modules[1])
    assert [type(m).__name__ for m in seq.modules()] == ["Sequential", "Linear", "Sequential", "ReLU"]
    assert seq.modules()[0] is seq
    seq.modules = (b,)  # the course may assign a tuple: still callable, still the layers
    assert seq.modules()[1] is b and list(seq.state_dict()) == [] and seq[0] is b


def test_sequential_from_ordered_dict_names_its_layers():
    layers = OrderedDict([("fc", nn.Linear(2, 3)), ("act", nn.ReLU())])
    seq = nn.Sequential(layers)
    t_seq = TNN.Sequential(OrderedDict([("fc", TNN.Linear(2, 3)), ("act", TNN.ReLU())]))
    assert list(seq.state_dict()) == list(t_seq.state_dict()) == ["fc.weight", "fc.bias"]
    assert seq.fc is seq.modules[0] and seq[1] is seq.act
    assert repr(seq) == repr(t_seq)
    with pytest.raises(AttributeError):
        _ = seq.nothing


# ----------------------------------------------------------------------------- tree walks

def test_apply_visits_children_first_then_self_like_torch():
    seen, t_seen = [], []
    assert build(nn).apply(lambda m: seen.append(type(m).__name__)) is not None
    build(TNN).apply(lambda m: t_seen.append(type(m).__name__))
    assert seen == t_seen
    model = nn.Sequential(nn.Linear(2, 2))
    assert model.apply(lambda m: None) is model


def test_train_and_eval_reach_every_module_and_call_overrides():
    calls = []

    class Frozen(nn.Module):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(False)  # a layer that stays in eval mode (detection code does this)

    model = nn.Sequential(nn.Dropout(), nn.ModuleList([Frozen()]))
    assert model.eval() is model and model.train() is model
    assert calls == [False, True]
    assert model.modules[0].training and not model.modules[1][0].training
    with pytest.raises(ValueError, match="bool"):
        model.train("yes")
    with pytest.raises(ValueError):
        TNN.Linear(1, 1).train("yes")


def test_get_submodule_follows_dotted_paths():
    model = build(nn)
    assert model.get_submodule("blocks.1.conv") is model.blocks[1].conv
    assert model.get_submodule("mlp.2.1") is model.mlp[2][1]
    assert model.get_submodule("") is model
    rnn = nn.RNN(2, 3, num_layers=2)  # the course keeps its cells in a plain list
    assert rnn.get_submodule("rnn_cells.1") is rnn.rnn_cells[1]
    with pytest.raises(AttributeError, match="nope"):
        model.get_submodule("blocks.nope")
    with pytest.raises(AttributeError):
        build(TNN).get_submodule("blocks.nope")
    assert model.get_buffer("blocks.0.norm.running_var") is model.blocks[0].norm.running_var
    with pytest.raises(AttributeError):
        model.get_parameter("blocks.0.norm.running_var")


def test_requires_grad_zero_grad_and_dtypes():
    np.random.seed(1)
    model = nn.Sequential(nn.Linear(3, 2))
    assert model.requires_grad_(False) is model
    assert not any(p.requires_grad for p in model.parameters())
    model.requires_grad_()
    x = ndl.Tensor(np.random.randn(4, 3), dtype="float32", requires_grad=False)
    model(x).sum().backward(accumulate=True)
    grad = model.modules[0].weight.grad
    model.zero_grad(set_to_none=False)
    assert model.modules[0].weight.grad is grad and not grad.numpy().any()  # in place: owns its buffer
    model(x).sum().backward(accumulate=True)
    ref = TNN.Linear(3, 2)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(model.modules[0].weight.numpy().T))
    ref(torch.tensor(x.numpy())).sum().backward()
    np.testing.assert_allclose(grad.numpy(), ref.weight.grad.numpy().T, rtol=1e-6)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    # a gradient the course's backward hands to two leaves is zeroed without touching the other
    a, b = nn.Parameter(ndl.ones(2)), nn.Parameter(ndl.ones(2))
    holder = nn.Module()
    holder.a = a
    (a + b).sum().backward()
    b_grad = b.grad
    holder.zero_grad(set_to_none=False)
    assert not a.grad.numpy().any() and b_grad.numpy().tolist() == [1.0, 1.0]
    assert model.double() is model and model.modules[0].weight.dtype == "float64"
    assert model.float().modules[0].bias.dtype == "float32"
    with pytest.raises(TypeError, match="float16"):
        model.half()


# ----------------------------------------------------------------------------- repr

def _layers(lib):
    return [
        lib.Linear(2, 3), lib.Linear(2, 3, bias=False), lib.Conv2d(3, 16, 3),
        lib.Conv2d(3, 16, (3, 5), stride=2, padding=1, dilation=2, bias=False, padding_mode="reflect"),
        lib.Conv2d(4, 8, 3, padding="same", groups=2), lib.Conv1d(3, 4, 3), lib.Conv1d(3, 4, 3, stride=2, padding=1),
        lib.Dropout(), lib.Dropout(0.1), lib.Flatten(), lib.Identity(), lib.ReLU(), lib.Tanh(), lib.Sigmoid(),
        lib.Embedding(10, 3), lib.RNNCell(3, 4), lib.RNNCell(3, 4, bias=False, nonlinearity="relu"),
        lib.LSTMCell(3, 4), lib.Softmax(dim=1), lib.LogSoftmax(dim=-1), lib.GELU(), lib.GELU("tanh"), lib.SiLU(),
        lib.LeakyReLU(), lib.LeakyReLU(0.2), lib.MaxPool2d(2), lib.MaxPool2d(3, 2, 1), lib.AvgPool2d(2),
        lib.AdaptiveAvgPool2d(1), lib.AdaptiveAvgPool2d((2, None)), lib.MSELoss(), lib.CrossEntropyLoss(),
    ]


@pytest.mark.parametrize("i", range(len(_layers(nn))))
def test_layer_repr_matches_torch(i):
    assert repr(_layers(nn)[i]) == repr(_layers(TNN)[i])


def test_tree_reprs_match_torch():
    for make in (
        lambda lib: lib.Sequential(lib.Linear(2, 3), lib.ReLU(), lib.Sequential(lib.Linear(3, 3), lib.Dropout(0.1))),
        lambda lib: lib.ModuleList([lib.Linear(2, 2) for _ in range(3)] + [lib.ReLU(), lib.Linear(2, 3),
                                                                           lib.Linear(2, 3)]),
        lambda lib: lib.ModuleDict({"a": lib.Linear(1, 1), "b": lib.Sequential(lib.ReLU())}),
        lambda lib: lib.ModuleList(), lambda lib: lib.Sequential(), lambda lib: lib.Module(),
    ):
        assert repr(make(nn)) == repr(make(TNN))
    assert str(nn.Sequential(nn.ReLU())) == repr(nn.Sequential(nn.ReLU()))


def test_reprs_of_needle_specific_layers():
    assert repr(nn.Conv(3, 16, 3)) == repr(TNN.Conv2d(3, 16, 3, padding=1)).replace("Conv2d", "Conv")
    assert repr(nn.BatchNorm1d(4)).startswith("BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True")
    assert repr(nn.LayerNorm1d(4)).startswith("LayerNorm1d((4,), eps=1e-05, elementwise_affine=True")
    assert repr(nn.LSTM(3, 4, 2)).startswith("LSTM(\n  3, 4, num_layers=2\n  (lstm_cells.0): LSTMCell(3, 4)")
    pl = nn.ParameterList([nn.Parameter(ndl.zeros(3, 4)), nn.Parameter(ndl.zeros(2))])
    assert repr(pl) == ("ParameterList(\n    (0): Parameter containing: [needle.float32 of size 3x4]\n"
                        "    (1): Parameter containing: [needle.float32 of size 2]\n)")


# ----------------------------------------------------------------------------- nn.init

SHAPES = [(3, 4), (8, 3, 5, 5), (6, 2, 7), (5, 4, 3, 2, 2), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_match_torch(shape):
    mine = nn_init._calculate_fan_in_and_fan_out(ndl.zeros(*shape))
    assert mine == TNN.init._calculate_fan_in_and_fan_out(torch.zeros(*shape))


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn_init.xavier_uniform_(ndl.zeros(4))
    with pytest.raises(ValueError):
        TNN.init.xavier_uniform_(torch.zeros(4))


@pytest.mark.parametrize("name, param", [("linear", None), ("conv2d", None), ("conv_transpose3d", None),
                                         ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
                                         ("leaky_relu", 0.2), ("leaky_relu", 0), ("selu", None)])
def test_calculate_gain_matches_torch(name, param):
    assert nn_init.calculate_gain(name, param) == pytest.approx(TNN.init.calculate_gain(name, param), rel=1e-15)


def test_calculate_gain_errors_match_torch():
    for args in (("swish",), ("leaky_relu", "x"), ("leaky_relu", True)):
        with pytest.raises(ValueError):
            TNN.init.calculate_gain(*args)
        with pytest.raises(ValueError):
            nn_init.calculate_gain(*args)


def _bound(fn, shape, **kw):
    """The U(-b, b) bound of a torch initialiser, from PyTorch's formulas and its fan helper."""
    fan_in, fan_out = TNN.init._calculate_fan_in_and_fan_out(torch.zeros(*shape))
    if fn == "xavier_uniform_":
        return kw.get("gain", 1.0) * math.sqrt(6.0 / (fan_in + fan_out))
    fan = fan_in if kw.get("mode", "fan_in") == "fan_in" else fan_out
    gain = TNN.init.calculate_gain(kw.get("nonlinearity", "leaky_relu"), kw.get("a", 0))
    return gain * math.sqrt(3.0 / fan)


@pytest.mark.parametrize("fn, kw", [
    ("xavier_uniform_", {}), ("xavier_uniform_", {"gain": 2.0}), ("kaiming_uniform_", {}),
    ("kaiming_uniform_", {"a": math.sqrt(5)}), ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
])
@pytest.mark.parametrize("shape", [(300, 400), (64, 32, 3, 3)])
def test_uniform_initialisers_bounds_and_spread_match_torch(fn, kw, shape):
    np.random.seed(0)
    torch.manual_seed(0)
    t = ndl.Tensor(np.zeros(shape), dtype="float32")
    out = getattr(nn_init, fn)(t, **kw)
    assert out is t
    ref = getattr(TNN.init, fn)(torch.empty(*shape), **kw)
    bound = _bound(fn, shape, **kw)
    values = t.numpy()
    assert np.abs(values).max() <= bound * (1 + 1e-6) and np.abs(values).max() > 0.99 * bound
    assert ref.abs().max().item() <= bound * (1 + 1e-6)
    assert values.std() == pytest.approx(ref.std().item(), rel=0.03)
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert abs(values.mean()) < 0.02 * bound


@pytest.mark.parametrize("fn, kw", [
    ("xavier_normal_", {}), ("xavier_normal_", {"gain": 0.5}), ("kaiming_normal_", {}),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"}), ("normal_", {"mean": 1.0, "std": 0.02}),
])
def test_normal_initialisers_spread_matches_torch(fn, kw):
    np.random.seed(1)
    torch.manual_seed(1)
    shape = (256, 64, 3)
    t = ndl.Tensor(np.zeros(shape), dtype="float64")
    assert getattr(nn_init, fn)(t, **kw) is t
    ref = getattr(TNN.init, fn)(torch.empty(*shape, dtype=torch.float64), **kw)
    values = t.numpy()
    assert values.std() == pytest.approx(ref.std().item(), rel=0.02)
    assert values.mean() == pytest.approx(ref.mean().item(), abs=0.02 * ref.std().item() + 1e-9)


def _truncated_moments(mean, std, a, b):
    """The mean and standard deviation of N(mean, std^2) truncated to [a, b] (closed forms)."""
    def pdf(x):
        return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

    def cdf(x):
        return (1 + math.erf(x / math.sqrt(2))) / 2

    alpha, beta = (a - mean) / std, (b - mean) / std
    z = cdf(beta) - cdf(alpha)
    shift = (pdf(alpha) - pdf(beta)) / z
    var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - shift ** 2
    return mean + std * shift, std * math.sqrt(var)


def test_trunc_normal_matches_torch_in_bounds_and_moments():
    np.random.seed(2)
    torch.manual_seed(2)
    n = 300 * 400
    for mean, std, a, b in ((0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04), (0.5, 1.0, 0.0, 3.0)):
        t = ndl.Tensor(np.zeros((300, 400)), dtype="float32")
        nn_init.trunc_normal_(t, mean, std, a, b)
        ref = TNN.init.trunc_normal_(torch.empty(300, 400), mean, std, a, b)
        want_mean, want_std = _truncated_moments(mean, std, a, b)
        for values in (t.numpy(), ref.numpy()):  # needle's and PyTorch's draws, against the closed forms
            assert values.min() >= a and values.max() <= b
            assert abs(values.mean() - want_mean) < 5 * want_std / math.sqrt(n)
            assert values.std() == pytest.approx(want_std, rel=0.01)
    with pytest.raises(ValueError, match="a < b"):
        nn_init.trunc_normal_(t, a=1.0, b=0.0)


def test_erfinv_composite_matches_torch():
    x = np.linspace(-0.9999999, 0.9999999, 4001)
    mine = nn_init._erfinv(ndl.Tensor(x, dtype="float64")).numpy()
    np.testing.assert_allclose(mine, torch.erfinv(torch.tensor(x)).numpy(), rtol=3e-7, atol=1e-12)


def test_uniform_and_normal_draw_numpys_global_rng():
    t = ndl.Tensor(np.zeros((3, 4)), dtype="float32")
    u = ndl.Tensor(np.zeros((2, 5)), dtype="float64")
    np.random.seed(5)
    nn_init.uniform_(t, -2.0, 3.0)
    nn_init.normal_(u, 1.0, 0.5)
    np.random.seed(5)
    np.testing.assert_allclose(t.numpy(), np.random.rand(3, 4) * 5 - 2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(u.numpy(), np.random.randn(2, 5) * 0.5 + 1, rtol=1e-6, atol=1e-6)


def test_initialisers_write_in_place_outside_the_graph():
    layer = nn.Conv2d(2, 3, 3)
    weight = layer.weight
    alias = layer.state_dict()["weight"]  # shares the weight's memory
    for fn in (nn_init.kaiming_normal_, nn_init.xavier_uniform_, nn_init.zeros_, nn_init.ones_,
               lambda t: nn_init.constant_(t, 0.25), nn_init.trunc_normal_):
        out = fn(layer.weight)
        assert out is weight and layer.weight is weight
        assert weight.is_leaf() and weight.requires_grad and isinstance(weight, nn.Parameter)
        np.testing.assert_array_equal(alias.numpy(), weight.numpy())
    np.testing.assert_array_equal(weight.numpy(), np.clip(weight.numpy(), -2, 2))
    (layer(ndl.ones(1, 2, 5, 5)).sum()).backward()  # still a trainable leaf
    assert weight.grad is not None


def test_constant_and_eye_match_torch():
    t = ndl.zeros(3, 5)
    ref = torch.zeros(3, 5)
    np.testing.assert_array_equal(nn_init.eye_(t).numpy(), TNN.init.eye_(ref).numpy())
    np.testing.assert_array_equal(nn_init.constant_(ndl.zeros(2, 2, dtype="int64"), 3).numpy(), np.full((2, 2), 3))
    with pytest.raises(ValueError, match="2 dimensions"):
        nn_init.eye_(ndl.zeros(2, 2, 2))


def test_init_errors():
    with pytest.raises(TypeError, match="floating"):
        nn_init.normal_(ndl.zeros(2, 2, dtype="int64"))
    with pytest.raises(TypeError, match="needle Tensor"):
        nn_init.uniform_(np.zeros(3))
    with pytest.raises(ValueError, match="fan_in, fan_out"):
        nn_init.kaiming_uniform_(ndl.zeros(2, 2), mode="fan_avg")
    with pytest.raises(ValueError):
        TNN.init.kaiming_uniform_(torch.zeros(2, 2), mode="fan_avg")
    with pytest.raises(TypeError, match="generator"):
        nn_init.normal_(ndl.zeros(2), generator=torch.Generator())
    empty = ndl.zeros(0, 3)
    assert nn_init.kaiming_uniform_(empty) is empty  # nothing to fill (PyTorch warns)


def test_kaiming_on_needles_in_out_linear_weight_takes_the_other_mode():
    """The documented rule: needle's course Linear weight is (in, out), PyTorch's (out, in);
    mode='fan_out' on needle's gives PyTorch's default fan_in bound."""
    np.random.seed(3)
    layer = nn.Linear(400, 20)
    nn_init.kaiming_uniform_(layer.weight, mode="fan_out", nonlinearity="relu")
    bound = _bound("kaiming_uniform_", (20, 400), nonlinearity="relu")
    values = layer.weight.numpy()
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound


def test_init_inside_a_compiled_step_draws_fresh_numbers():
    buf = ndl.zeros(5)

    def fill(x):
        nn_init.uniform_(buf, -1.0, 1.0)
        return x * buf

    compiled = ndl.compile(fill)
    x = ndl.ones(5)
    got, expected = [], []
    for seed in range(4):
        np.random.seed(seed)
        got.append(compiled(x).numpy())
    for seed in range(4):
        np.random.seed(seed)
        expected.append(fill(x).numpy())
    np.testing.assert_array_equal(np.array(got), np.array(expected))
    assert len({tuple(g) for g in got}) == 4


# ----------------------------------------------------------------------------- nn.utils

def grad_pairs(shapes=((3, 4), (4,), (2, 2, 2)), seed=0):
    rs = np.random.RandomState(seed)
    grads = [rs.randn(*s) for s in shapes]
    mine = [nn.Parameter(ndl.Tensor(np.zeros(s), dtype="float64")) for s in shapes]
    ref = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for p, t, g in zip(mine, ref, grads):
        p.grad = ndl.Tensor(g, dtype="float64", requires_grad=False)
        t.grad = torch.tensor(g)
    return mine, ref


@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, math.inf, "inf"])
@pytest.mark.parametrize("max_norm", [0.1, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    mine, ref = grad_pairs()
    total = nn.utils.clip_grad_norm_(mine, max_norm, norm_type=norm_type)
    t_total = TNN.utils.clip_grad_norm_(ref, max_norm, norm_type=norm_type)
    assert isinstance(total, ndl.Tensor) and total.shape == () and total.dtype == "float64"
    np.testing.assert_allclose(total.numpy(), t_total.numpy(), rtol=1e-12)
    for p, t in zip(mine, ref):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_inputs_like_torch():
    mine, ref = grad_pairs()
    mine.append(nn.Parameter(ndl.zeros(3)))  # no gradient: skipped
    ref.append(torch.zeros(3, requires_grad=True))
    total = nn.utils.clip_grad_norm_((p for p in mine), 0.5)  # a generator is read once
    t_total = TNN.utils.clip_grad_norm_((t for t in ref), 0.5)
    np.testing.assert_allclose(total.numpy(), t_total.numpy(), rtol=1e-12)
    one, t_one = grad_pairs(((5,),))
    np.testing.assert_allclose(nn.utils.clip_grad_norm_(one[0], 0.5).numpy(),
                               TNN.utils.clip_grad_norm_(t_one[0], 0.5).numpy(), rtol=1e-12)
    np.testing.assert_allclose(one[0].grad.numpy(), t_one[0].grad.numpy(), rtol=1e-12)
    assert float(nn.utils.clip_grad_norm_([nn.Parameter(ndl.zeros(2))], 1.0)) == 0.0
    assert nn.utils.get_total_norm([]).shape == ()
    with pytest.raises(ValueError, match="norm_type"):
        nn.utils.clip_grad_norm_(mine, 1.0, norm_type=-1)
    with pytest.raises(TypeError, match="tensors"):
        nn.utils.clip_grad_norm_([1.0], 1.0)


def test_clip_grad_norm_nonfinite_like_torch():
    mine, ref = grad_pairs()
    mine[0].grad = ndl.Tensor(np.array([[np.nan] * 4] * 3), dtype="float64", requires_grad=False)
    ref[0].grad = torch.full((3, 4), float("nan"), dtype=torch.float64)
    total = nn.utils.clip_grad_norm_(mine, 1.0)
    t_total = TNN.utils.clip_grad_norm_(ref, 1.0)
    assert np.isnan(total.numpy()) and torch.isnan(t_total)
    for p, t in zip(mine, ref):
        np.testing.assert_array_equal(np.isnan(p.grad.numpy()), torch.isnan(t.grad).numpy())
    mine, ref = grad_pairs()
    mine[1].grad = ndl.Tensor(np.array([np.inf, 0, 0, 0]), dtype="float64", requires_grad=False)
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(mine, 1.0, error_if_nonfinite=True)


def test_clip_grad_value_matches_torch():
    mine, ref = grad_pairs(seed=4)
    mine[0].grad = ndl.Tensor(np.where(np.eye(3, 4) > 0, np.nan, mine[0].grad.numpy()), dtype="float64",
                              requires_grad=False)
    ref[0].grad = torch.tensor(mine[0].grad.numpy())
    assert nn.utils.clip_grad_value_(mine, 0.5) is None
    TNN.utils.clip_grad_value_(ref, 0.5)
    for p, t in zip(mine, ref):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())


def test_clipping_an_owned_gradient_is_in_place_and_a_shared_one_is_not_scaled_twice():
    a, b = nn.Parameter(ndl.Tensor([3.0, 0.0])), nn.Parameter(ndl.Tensor([0.0, 4.0]))
    (a * 1.0 + b).sum().backward()  # the course's backward may hand both the same gradient
    ta, tb = torch.tensor([3.0, 0.0], requires_grad=True), torch.tensor([0.0, 4.0], requires_grad=True)
    (ta + tb).sum().backward()
    nn.utils.clip_grad_norm_([a, b], 1.0)
    TNN.utils.clip_grad_norm_([ta, tb], 1.0)
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-6)
    c = nn.Parameter(ndl.Tensor([3.0, 4.0]))
    (c * c).sum().backward(accumulate=True)  # owns its gradient buffer
    grad = c.grad
    nn.utils.clip_grad_norm_([c], 1.0)
    assert c.grad is grad
    np.testing.assert_allclose(grad.numpy(), np.array([6.0, 8.0]) / (10 + 1e-6), rtol=1e-6)


def test_clipping_inside_a_compiled_step_equals_eager():
    def make():
        np.random.seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        return model, ndl.optim.SGD(model.parameters(), lr=0.5)

    (a, opt_a), (b, opt_b) = make(), make()
    loss_fn = nn.SoftmaxLoss()

    def step(model, opt, x, y):
        model.zero_grad(set_to_none=False)
        for half in (slice(0, 3), slice(3, 6)):
            loss_fn(model(x[half]), y[half]).backward(accumulate=True)
        norm = nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        nn.utils.clip_grad_value_(model.parameters(), 0.02)
        opt.step()
        return norm

    compiled = ndl.compile(lambda x, y: step(a, opt_a, x, y))
    rs = np.random.RandomState(1)
    for _ in range(4):
        x = ndl.Tensor(rs.randn(6, 4), dtype="float32", requires_grad=False)
        y = ndl.Tensor(rs.randint(0, 3, 6), dtype="int64")
        np.testing.assert_array_equal(compiled(x, y).numpy(), step(b, opt_b, x, y).numpy())
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert len(compiled.programs) == 1


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoints_written_with_the_old_sequential_names_still_resume(tmp_path):
    """Before this release a Sequential's layers were saved as `modules.0.weight`; `needle train`
    checkpoints holding those names still load (into `0.weight`)."""
    import json

    from safetensors.numpy import save_file

    from needle.serialization import read_safetensors, tensor_digest
    from needle.train.checkpoint import current_model_names, load_checkpoint, save_checkpoint

    assert current_model_names({"modules.0.weight": 1, "model.modules.2.modules.0.bias": 2, "layers.0.w": 3}) == {
        "0.weight": 1, "model.2.0.bias": 2, "layers.0.w": 3}
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 1)))
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    path = str(tmp_path / "new.safetensors")
    save_checkpoint(path, model, opt, 1, {"config": {}, "history": []})
    arrays, header = read_safetensors(path)
    old = {k.replace("model/", "model/modules.").replace("model/modules.2.", "model/modules.2.modules."): v
           for k, v in arrays.items()}
    assert "model/modules.2.modules.0.weight" in old
    meta = json.loads(header["needle_checkpoint"])
    meta["sha256"] = tensor_digest(old)
    legacy = str(tmp_path / "old.safetensors")
    save_file(old, legacy, metadata={"needle_checkpoint": json.dumps(meta)})
    np.random.seed(1)
    fresh = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 1)))
    load_checkpoint(legacy, fresh, ndl.optim.SGD(fresh.parameters(), lr=0.1))
    for p, q in zip(fresh.parameters(), model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
