"""needle.scalar used the way MiniTorch's module 0-1 guide uses minitorch: Scalar(v, history),
ScalarHistory's optional fields, chain_rule pairs for every input (constants included),
backpropagate skipping constants, user-defined ScalarFunctions, and Parameter marking its
value with requires_grad_. Expected values are hand-derived or central differences."""
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import needle.scalar as ns
from needle.scalar import (
    Context,
    Module,
    Parameter,
    Scalar,
    ScalarFunction,
    ScalarHistory,
    backpropagate,
    central_difference,
    topological_sort,
)

fast = settings(deadline=None, max_examples=60)


class Function1(ScalarFunction):
    """f(x, y) = x + y + 10: both partial derivatives are 1."""

    @staticmethod
    def forward(ctx: Context, x: float, y: float) -> float:
        return x + y + 10

    @staticmethod
    def backward(ctx: Context, d_output: float):
        return d_output, d_output


class Function2(ScalarFunction):
    """f(x, y) = x y + x: df/dx = y + 1, df/dy = x."""

    @staticmethod
    def forward(ctx: Context, x: float, y: float) -> float:
        ctx.save_for_backward(x, y)
        return x * y + x

    @staticmethod
    def backward(ctx: Context, d_output: float):
        x, y = ctx.saved_values
        return d_output * (y + 1), d_output * x


# ---------------------------------------------------------------------------- ScalarHistory and Scalar(v, history)


def test_scalar_history_fields_are_optional_keyword_and_positional():
    empty = ScalarHistory()
    assert (empty.last_fn, empty.ctx, tuple(empty.inputs)) == (None, None, ())
    ctx, x = Context(), Scalar(1.0)
    by_position = ScalarHistory(Function1, ctx, [x, x])
    by_keyword = ScalarHistory(last_fn=Function1, ctx=ctx, inputs=[x, x])
    assert by_position.last_fn is by_keyword.last_fn is Function1
    assert by_position.ctx is by_keyword.ctx is ctx
    assert list(by_position.inputs) == list(by_keyword.inputs) == [x, x]
    only_fn = ScalarHistory(Function1)
    assert only_fn.ctx is None and tuple(only_fn.inputs) == ()
    assert ScalarHistory(ctx=ctx).last_fn is None


def test_scalar_with_an_explicit_history_gives_one_pair_per_input():
    x = Scalar(0.0)
    made = Scalar(0.0, ScalarHistory(Function1, ctx=Context(), inputs=[x, x]))
    assert not made.is_leaf() and not made.is_constant() and made.requires_grad
    assert made.last_fn is Function1 and list(made.parents) == [x, x]
    back = list(made.chain_rule(d_output=5))
    assert len(back) == 2
    assert all(variable is x and deriv == 5 for variable, deriv in back)
    made.backward(d_output=5)  # x reaches made along both inputs: 5 * 1 + 5 * 1
    assert x.derivative == 10


def test_an_empty_history_makes_a_leaf_variable_and_none_a_constant():
    var = Scalar(0.0, ScalarHistory())
    assert var.is_leaf() and not var.is_constant() and var.requires_grad
    assert var.history == ScalarHistory() and tuple(var.parents) == ()
    made = Scalar(0.0, ScalarHistory(Function1, ctx=Context(), inputs=[var, var]))
    variable, deriv = list(made.chain_rule(d_output=5))[0]
    assert variable is var and deriv == 5

    constant = Scalar(2.0, None)
    assert constant.is_constant() and not constant.is_leaf() and not constant.requires_grad
    assert Scalar(2.0).is_leaf()  # the default history is an empty one, as in MiniTorch
    named = Scalar(2.0, ScalarHistory(), "w")  # name is the third positional argument
    assert named.name == "w" and named.is_leaf()


def test_needle_requires_grad_and_minitorch_history_are_one_state():
    frozen = Scalar(1.0, requires_grad=False)
    assert frozen.history is None and frozen.is_constant()
    assert Scalar(1.0, requires_grad=True).history == ScalarHistory()
    assert frozen.requires_grad_(True) is frozen
    assert frozen.is_leaf() and frozen.history == ScalarHistory()
    frozen.requires_grad_(False)
    assert frozen.history is None
    frozen.requires_grad = True
    assert frozen.is_leaf()
    x = Scalar(3.0)
    y = x * 2.0
    assert y.history.last_fn is ns.Mul and y.last_fn is ns.Mul
    assert y.history.ctx is y.ctx and tuple(y.history.inputs) == tuple(y.inputs)


def test_scalar_history_argument_errors():
    with pytest.raises(TypeError, match="ScalarHistory or None.*name="):
        Scalar(1.0, "w")
    with pytest.raises(ValueError, match="contradicts"):
        Scalar(1.0, ScalarHistory(), requires_grad=False)
    with pytest.raises(ValueError, match="contradicts"):
        Scalar(1.0, None, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        Scalar(1.0, ScalarHistory()).chain_rule(1.0)
    with pytest.raises(RuntimeError, match="constant"):
        Scalar(1.0, None).chain_rule(1.0)
    with pytest.raises(RuntimeError, match="no Context"):
        Scalar(1.0, ScalarHistory(Function1, inputs=[Scalar(0.0), Scalar(0.0)])).chain_rule(1.0)
    with pytest.raises(RuntimeError, match="constant"):
        Scalar(1.0, None).accumulate_derivative(1.0)


# ---------------------------------------------------------------------------- chain_rule and backpropagate


def test_chain_rule_returns_a_pair_for_a_constant_input_too():
    var = Scalar(5)
    y = Function2.apply(10, var)  # f(x, y) = x y + x at x = 10 (a constant), y = 5
    assert y.data == 10 * 5 + 10
    back = list(y.chain_rule(d_output=5))
    assert len(back) == 2
    constant, d_constant = back[0]
    assert constant.is_constant() and constant.data == 10.0
    assert d_constant == 5 * (5 + 1)  # df/dx = y + 1
    variable, deriv = back[1]
    assert variable is var and deriv == 5 * 10  # df/dy = x


def test_chain_rule_with_two_variables():
    var1, var2 = Scalar(5), Scalar(10)
    back = list(Function2.apply(var1, var2).chain_rule(d_output=5))
    assert back[0][0] is var1 and back[1][0] is var2
    assert back[0][1] == 5 * (10 + 1)
    assert back[1][1] == 5 * 5


def test_built_in_functions_also_pair_every_input():
    x = Scalar(3.0)
    back = (x * 4.0).chain_rule(2.0)
    assert len(back) == 2
    assert back[0][0] is x and back[0][1] == 2.0 * 4.0
    assert back[1][0].is_constant() and back[1][1] == 2.0 * 3.0


def test_backpropagate_skips_constants_and_accumulates_on_leaves():
    # MiniTorch's four backprop cases: Function1 passes d_output to both inputs
    var = Scalar(0)
    Function1.apply(0, var).backward(d_output=5)
    assert var.derivative == 5

    var = Scalar(0)
    Function1.apply(0, Function1.apply(0, var)).backward(d_output=5)
    assert var.derivative == 5

    var1 = Scalar(0)
    var4 = Function1.apply(Function1.apply(0, var1), Function1.apply(0, var1))
    var4.backward(d_output=5)
    assert var1.derivative == 10

    var0 = Scalar(0)
    var1 = Function1.apply(0, var0)
    var4 = Function1.apply(Function1.apply(0, var1), Function1.apply(0, var1))
    backpropagate(var4, 5.0)
    assert var0.derivative == 10


def test_constants_in_an_explicit_history_get_no_derivative():
    x, c = Scalar(2.0), Scalar(7.0, None)
    made = Scalar(0.0, ScalarHistory(Function2, ctx=Context(), inputs=[x, c]))
    made.ctx.save_for_backward(2.0, 7.0)
    assert [n.unique_id for n in topological_sort(made)] == [made.unique_id, x.unique_id]
    made.backward(3.0)
    assert x.derivative == 3.0 * (7.0 + 1)
    assert c.derivative is None


# ---------------------------------------------------------------------------- a user-defined ScalarFunction


class ScaledExpPlusSquare(ScalarFunction):
    """f(a, b, c) = a e^b + c^2: df/da = e^b, df/db = a e^b, df/dc = 2 c."""

    @staticmethod
    def forward(ctx: Context, a: float, b: float, c: float) -> float:
        e = math.exp(b)
        ctx.save_for_backward(a, e, c)
        return a * e + c * c

    @staticmethod
    def backward(ctx: Context, d_output: float):
        a, e, c = ctx.saved_values
        return d_output * e, d_output * a * e, d_output * 2.0 * c


def reference(a: float, b: float, c: float) -> float:
    return a * math.exp(b) + c ** 2


@fast
@given(st.floats(-3, 3), st.floats(-2, 2), st.floats(-3, 3))
def test_user_function_with_constants_and_variables_matches_central_differences(a, b, c):
    x, z = Scalar(b), Scalar(c)
    out = ScaledExpPlusSquare.apply(a, x, z)  # a is a Python number: a constant input
    assert out.data == pytest.approx(reference(a, b, c), rel=1e-12, abs=1e-12)
    assert out.ctx.saved_values == pytest.approx((a, math.exp(b), c))

    back = out.chain_rule(1.0)
    assert len(back) == 3 and back[0][0].is_constant() and back[1][0] is x and back[2][0] is z
    for i, (_, deriv) in enumerate(back):
        assert deriv == pytest.approx(central_difference(reference, a, b, c, arg=i), rel=1e-5, abs=1e-6)

    (out * 2.0).backward()
    assert x.derivative == pytest.approx(2.0 * central_difference(reference, a, b, c, arg=1), rel=1e-5, abs=1e-6)
    assert z.derivative == pytest.approx(2.0 * central_difference(reference, a, b, c, arg=2), rel=1e-5, abs=1e-6)


def test_user_function_of_constants_only_is_a_constant():
    out = ScaledExpPlusSquare.apply(1.0, 0.0, 2.0)
    assert out.is_constant() and out.data == pytest.approx(1.0 + 4.0)


# ---------------------------------------------------------------------------- Parameter


class Marked:
    """A non-Scalar value with requires_grad_, like a tensor: records the calls it gets."""

    def __init__(self):
        self.calls = []
        self.name = None

    def requires_grad_(self, flag):
        self.calls.append(flag)


def test_parameter_marks_its_value_at_construction_and_on_update():
    p = Parameter(Scalar(1.0, requires_grad=False))
    assert p.value.requires_grad and p.value.is_leaf()
    p.update(Scalar(2.0, None))
    assert p.value.data == 2.0 and p.value.requires_grad and p.value.is_leaf()

    tensorish = Marked()
    named = Parameter(tensorish, "w")
    assert tensorish.calls == [True] and tensorish.name == "w"
    replacement = Marked()
    named.update(replacement)
    assert named.value is replacement and replacement.calls == [True] and replacement.name == "w"

    plain = Parameter(3.5)  # nothing to mark: held as it is
    assert plain.value == 3.5
    plain.update(4.5)
    assert plain.value == 4.5


def test_a_parameter_of_a_module_trains_from_a_constant_start():
    class Affine(Module):
        def __init__(self):
            super().__init__()
            self.w = Parameter(Scalar(3.0, None))
            self.b = Parameter(Scalar(-1.0, None))

        def forward(self, x):
            return self.w.value * x + self.b.value

    m = Affine()
    m(2.0).backward()
    assert m.w.value.derivative == 2.0 and m.b.value.derivative == 1.0


# ------------------------------------------------------- docs/guides/backprop-toolkit.md


def test_every_needle_name_in_the_docs_minitorch_table_exists():
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guides" / "backprop-toolkit.md").read_text()
    section = guide.split("What MiniTorch's guide calls", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 9
    names = {n for _, needle_side in rows for n in re.findall(r"`([A-Za-z_]\w*)`", needle_side)}
    assert {"Scalar", "ScalarHistory", "ScalarFunction", "Context", "backpropagate", "Parameter"} <= names
    for name in names:
        assert hasattr(ns, name) or hasattr(Scalar, name), name
    for op in re.findall(r"`(\w+)`", rows[-2][0]):  # the operators row names MiniTorch's operators
        assert callable(getattr(ns.operators, op)), op
