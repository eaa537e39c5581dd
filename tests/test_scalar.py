"""needle.scalar: Scalar values and their derivatives (checked against central differences
of independent float formulas), the topological order, derivative_check, the Module tree,
SGD, and training the scalar network on the toy sets."""
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import needle.scalar as ns
from needle.data.toy_datasets import TOY_DATASETS
from needle.scalar import (
    SGD,
    Linear,
    Module,
    Network,
    Parameter,
    Scalar,
    ScalarFunction,
    central_difference,
    derivative_check,
    topological_sort,
    train_scalar_network,
)

ROOT = Path(__file__).resolve().parent.parent
EPS = 1e-6
fast = settings(deadline=None, max_examples=60)


def numeric_partials(fn, xs, eps=EPS):
    """Central differences of a float function of several floats."""
    out = []
    for i in range(len(xs)):
        up, down = list(xs), list(xs)
        up[i] += eps
        down[i] -= eps
        out.append((fn(*up) - fn(*down)) / (2 * eps))
    return out


def sigmoid_ref(v):
    return 0.5 * (1.0 + math.tanh(v / 2))  # an identity, independent of operators.sigmoid


# ---------------------------------------------------------------------------- single ops

UNARY = {
    "neg": (lambda s: -s, lambda v: -v, st.floats(-5, 5)),
    "log": (lambda s: s.log(), math.log, st.floats(0.1, 10)),
    "exp": (lambda s: s.exp(), math.exp, st.floats(-5, 5)),
    "sigmoid": (lambda s: s.sigmoid(), sigmoid_ref, st.floats(-8, 8)),
    "tanh": (lambda s: s.tanh(), math.tanh, st.floats(-4, 4)),
    "relu": (lambda s: s.relu(), lambda v: max(v, 0.0), st.floats(-5, 5).filter(lambda v: abs(v) > 1e-3)),
    "inv": (lambda s: 1.0 / s, lambda v: 1.0 / v, st.floats(0.2, 5).flatmap(lambda m: st.sampled_from([m, -m]))),
    "square": (lambda s: s ** 2, lambda v: v * v, st.floats(-5, 5)),
    "cube": (lambda s: s ** 3, lambda v: v ** 3, st.floats(-3, 3)),
    "sqrt": (lambda s: s ** 0.5, math.sqrt, st.floats(0.1, 9)),
    "two_to_the": (lambda s: 2.0 ** s, lambda v: 2.0 ** v, st.floats(-5, 5)),
    "rsub": (lambda s: 3.5 - s, lambda v: 3.5 - v, st.floats(-5, 5)),
    "radd_rmul": (lambda s: 2.0 + 3.0 * s, lambda v: 2.0 + 3.0 * v, st.floats(-5, 5)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_value_and_derivative(name):
    scalar_fn, float_fn, values = UNARY[name]

    @fast
    @given(values)
    def check(v):
        x = Scalar(v)
        out = scalar_fn(x)
        assert out.data == pytest.approx(float_fn(v), rel=1e-12, abs=1e-14)
        out.backward()
        (expected,) = numeric_partials(float_fn, [v])
        assert x.derivative == pytest.approx(expected, rel=1e-5, abs=1e-7)

    check()


BINARY = {
    "add": (lambda a, b: a + b, st.floats(-5, 5)),
    "sub": (lambda a, b: a - b, st.floats(-5, 5)),
    "mul": (lambda a, b: a * b, st.floats(-5, 5)),
    "div": (lambda a, b: a / b, st.floats(0.2, 5)),
    "pow": (lambda a, b: a ** b, st.floats(0.2, 4)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_value_and_derivatives(name):
    fn, values = BINARY[name]

    @fast
    @given(values, values)
    def check(u, v):
        a, b = Scalar(u), Scalar(v)
        out = fn(a, b)
        assert out.data == pytest.approx(fn(u, v), rel=1e-12, abs=1e-14)
        out.backward()
        da, db = numeric_partials(fn, [u, v])
        assert a.derivative == pytest.approx(da, rel=1e-5, abs=1e-7)
        assert b.derivative == pytest.approx(db, rel=1e-5, abs=1e-7)

    check()


@fast
@given(st.floats(-5, 5), st.floats(-5, 5))
def test_comparisons_give_indicator_scalars_with_zero_derivative(u, v):
    a, b = Scalar(u), Scalar(v)
    for out, truth in [(a < b, u < v), (a > b, u > v), (a == b, u == v), (a < 1.0, u < 1.0), (2.0 > a, 2.0 > u)]:
        assert isinstance(out, Scalar) and out.data == float(truth) and bool(out) == truth
    (a * (a < b) + b * (a > b)).backward()  # a piecewise "max": the gates themselves pass no gradient
    assert a.derivative == (1.0 if u < v else 0.0)
    assert b.derivative == (1.0 if u > v else 0.0)


# ---------------------------------------------------------------------------- random expression trees
# A tree is ("var", i) | ("const", c) | (op, child, ...). It is evaluated twice: with Scalars
# (the code under test) and with plain floats and math (the reference, also recording the
# magnitudes and distances from kinks so cases where finite differences are meaningless are
# rejected). Domain-restricted ops get arguments that stay in their domain by construction
# (log(a*a + 1)), or are rejected near their singularity (1/a, a/b).

UNARY_OPS = ["neg", "sigmoid", "tanh", "relu", "exp", "log_sq", "inv", "pow_int", "pow_float", "rpow"]
BINARY_OPS = ["add", "sub", "mul", "div", "pow_scalar", "gate_lt", "gate_gt", "plus_eq"]

leaves = st.one_of(
    st.tuples(st.just("var"), st.integers(0, 2)),
    st.tuples(st.just("const"), st.floats(-2, 2)),
)


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(UNARY_OPS), children, st.sampled_from([-1, 0, 1, 2, 3]), st.floats(-2, 3)),
        st.tuples(st.sampled_from(BINARY_OPS), children, children),
    )


trees = st.recursive(leaves, _extend, max_leaves=8)


class Reference:
    """Float evaluation that records the largest magnitude and the closest approach to a kink."""

    def __init__(self):
        self.largest = 0.0
        self.nearest_kink = math.inf

    def kink(self, v):
        self.nearest_kink = min(self.nearest_kink, abs(v))

    def __call__(self, tree, xs):
        value = self.eval(tree, xs)
        self.largest = max(self.largest, abs(value))
        return value

    def eval(self, tree, xs):
        op = tree[0]
        if op == "var":
            return xs[tree[1]]
        if op == "const":
            return tree[1]
        a = self(tree[1], xs)
        if op in UNARY_OPS:
            k, c = tree[2], tree[3]
            if op == "neg":
                return -a
            if op == "sigmoid":
                return sigmoid_ref(a)
            if op == "tanh":
                return math.tanh(a)
            if op == "relu":
                self.kink(a)
                return a if a > 0 else 0.0
            if op == "exp":
                return math.exp(a)
            if op == "log_sq":
                return math.log(a * a + 1.0)
            if op == "inv":
                self.kink(a)
                return 1.0 / a
            if op == "pow_int":
                if k < 0:
                    self.kink(a)
                return a ** k
            if op == "pow_float":
                return (a * a + 0.5) ** c
            if op == "rpow":
                return (abs(c) + 0.5) ** a
        b = self(tree[2], xs)
        if op in ("gate_lt", "gate_gt", "plus_eq") and tree[1] != tree[2]:
            self.kink(a - b)  # (identical subtrees compare the same way at every point)
        if op == "add":
            return a + b
        if op == "sub":
            return a - b
        if op == "mul":
            return a * b
        if op == "div":
            self.kink(b)
            return a / b
        if op == "pow_scalar":
            return (a * a + 0.5) ** b
        if op == "gate_lt":
            return a * (1.0 if a < b else 0.0)
        if op == "gate_gt":
            return b * (1.0 if a > b else 0.0)
        if op == "plus_eq":
            return a + (1.0 if a == b else 0.0)
        raise AssertionError(op)


def lift(v):
    return v if isinstance(v, Scalar) else Scalar(v, requires_grad=False)


def eval_scalar(tree, xs):
    """The same tree with Scalars; constants stay Python floats so the r-operators run."""
    op = tree[0]
    if op == "var":
        return xs[tree[1]]
    if op == "const":
        return tree[1]
    a = eval_scalar(tree[1], xs)
    if op in UNARY_OPS:
        k, c = tree[2], tree[3]
        return {
            "neg": lambda: -lift(a),
            "sigmoid": lambda: lift(a).sigmoid(),
            "tanh": lambda: lift(a).tanh(),
            "relu": lambda: lift(a).relu(),
            "exp": lambda: lift(a).exp(),
            "log_sq": lambda: (a * a + 1.0 if isinstance(a, Scalar) else lift(a * a + 1.0)).log(),
            "inv": lambda: 1.0 / lift(a),
            "pow_int": lambda: lift(a) ** k,
            "pow_float": lambda: (lift(a) * a + 0.5) ** c,
            "rpow": lambda: (abs(c) + 0.5) ** lift(a),
        }[op]()
    b = eval_scalar(tree[2], xs)
    return {
        "add": lambda: a + b,
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "div": lambda: a / lift(b),
        "pow_scalar": lambda: (lift(a) * a + 0.5) ** b,
        "gate_lt": lambda: a * (lift(a) < b),
        "gate_gt": lambda: b * (lift(a) > b),
        "plus_eq": lambda: a + (lift(a) == b),
    }[op]()


def full_ref(tree, xs, recorder=None):
    # every variable also enters linearly, so each leaf has a well-defined derivative
    r = recorder or Reference()
    return r(tree, xs) + 0.5 * xs[0] + 0.25 * xs[1] - 0.125 * xs[2]


def full_scalar(tree, xs):
    return lift(eval_scalar(tree, xs)) + 0.5 * xs[0] + 0.25 * xs[1] - 0.125 * xs[2]


@settings(deadline=None, max_examples=150)
@given(trees, st.lists(st.floats(-2, 2), min_size=3, max_size=3))
def test_random_expression_trees_match_central_differences(tree, xs):
    recorder = Reference()
    try:
        expected = full_ref(tree, xs, recorder)
        partials = numeric_partials(lambda *v: full_ref(tree, v), xs)
    except (OverflowError, ZeroDivisionError, ValueError):
        assume(False)
    assume(recorder.largest < 1e4 and recorder.nearest_kink > 1e-3)

    leaves_ = [Scalar(x) for x in xs]
    out = full_scalar(tree, leaves_)
    scale = 1.0 + recorder.largest
    assert out.data == pytest.approx(expected, rel=1e-9, abs=1e-12 * scale)
    out.backward()
    for leaf, numeric in zip(leaves_, partials):
        # central-difference error: roundoff ~ 1e-16 * scale / EPS, truncation ~ EPS^2 * f'''
        assert leaf.derivative == pytest.approx(numeric, rel=1e-5, abs=1e-6 * scale)

    # derivative_check agrees, differencing the Scalar function itself
    derivative_check(lambda *s: full_scalar(tree, s), *xs, rtol=1e-5, atol=1e-6 * scale)


# ---------------------------------------------------------------------------- graph and backward


def test_topological_order_puts_every_node_before_its_parents():
    x, y = Scalar(1.5), Scalar(-0.5)
    a = x * y
    b = a + x          # x is reached along two paths
    c = a.sigmoid()
    out = b * c + 2.0  # the constant 2.0 is not part of the order
    order = topological_sort(out)
    assert order[0] is out
    ids = [n.unique_id for n in order]
    assert len(ids) == len(set(ids))
    position = {n.unique_id: i for i, n in enumerate(order)}
    for node in order:
        for parent in node.parents:
            if parent.requires_grad:
                assert position[node.unique_id] < position[parent.unique_id]
    assert {x.unique_id, y.unique_id, a.unique_id, b.unique_id, c.unique_id} <= set(ids)
    assert all(n.requires_grad for n in order)


def test_topological_sort_of_a_constant_is_empty():
    assert topological_sort(Scalar(3.0, requires_grad=False) * 2.0) == []


def test_backward_through_a_chain_deeper_than_the_recursion_limit():
    x = Scalar(0.3)
    y = x
    depth = sys.getrecursionlimit() * 3
    for _ in range(depth):
        y = y + x
    y.backward()
    assert x.derivative == depth + 1  # y = (depth + 1) * x


def test_leaf_used_twice_sums_both_contributions():
    x = Scalar(3.0)
    (x * x).backward()
    assert x.derivative == pytest.approx(2 * 3.0)

    w = Scalar(-1.25)
    ((w * 4.0).sigmoid() + w.exp()).backward()
    expected = numeric_partials(lambda v: sigmoid_ref(4.0 * v) + math.exp(v), [-1.25])[0]
    assert w.derivative == pytest.approx(expected, rel=1e-6)


def test_leaves_accumulate_across_backward_calls_until_zero_grad():
    x, y = Scalar(2.0), Scalar(5.0)
    out = x * y
    out.backward()
    out.backward(0.5)  # the graph is kept: the same products again, scaled by d_output
    assert x.derivative == pytest.approx(5.0 * 1.5)
    assert y.derivative == pytest.approx(2.0 * 1.5)
    x.zero_grad()
    assert x.derivative is None
    out.backward()
    assert x.derivative == pytest.approx(5.0)
    y.derivative = None
    (y * 3.0).backward()
    assert y.derivative == pytest.approx(3.0)


def test_only_leaves_that_require_grad_and_are_used_get_derivatives():
    x, frozen, unused = Scalar(2.0), Scalar(3.0, requires_grad=False), Scalar(4.0)
    mid = x * frozen
    (mid + 1.0).backward()
    assert x.derivative == pytest.approx(3.0)
    assert frozen.derivative is None and unused.derivative is None
    assert mid.derivative is None  # intermediate values do not keep derivatives
    assert mid.parents == (x, frozen) and not mid.is_leaf() and x.is_leaf()
    assert mid.history.last_fn is ns.Mul


def test_operations_on_constants_record_no_graph():
    c = Scalar(2.0, requires_grad=False)
    out = (c * 3.0).exp() + 1.0
    # MiniTorch: a constant (history None) is not a leaf (an empty ScalarHistory)
    assert out.is_constant() and not out.is_leaf() and out.history is None and out.parents == ()
    assert out.data == pytest.approx(math.exp(6.0) + 1.0)


def test_scalar_function_apply_and_custom_functions():
    class Square(ScalarFunction):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, d):
            (x,) = ctx.saved_values
            return 2.0 * x * d

    x = Scalar(-1.5)
    out = Square.apply(x)
    assert out.data == 2.25
    out.backward()
    assert x.derivative == pytest.approx(-3.0)
    assert Square.apply(4).data == 16.0  # plain numbers are accepted


# ---------------------------------------------------------------------------- central differences and derivative_check


@fast
@given(st.floats(-3, 3), st.floats(-3, 3))
def test_central_difference_on_floats_and_on_scalars(u, v):
    f = lambda a, b: a * a * b  # noqa: E731
    assert central_difference(f, u, v, arg=0) == pytest.approx(2 * u * v, abs=1e-6)
    assert central_difference(f, u, v, arg=1) == pytest.approx(u * u, abs=1e-6)
    g = lambda a, b: (a * b).sigmoid()  # noqa: E731 - needs Scalar methods
    s = sigmoid_ref(u * v)
    assert central_difference(g, Scalar(u), Scalar(v), arg=1) == pytest.approx(s * (1 - s) * u, abs=1e-6)


def test_derivative_check_passes_on_correct_derivatives():
    pairs = derivative_check(lambda a, b: (a * b + a.exp()).tanh() / (b * b + 1.0), 0.3, Scalar(-0.7))
    assert len(pairs) == 2
    for backward, numeric in pairs:
        assert backward == pytest.approx(numeric, rel=1e-5, abs=1e-8)


class WrongCube(ScalarFunction):
    """x^3 with the derivative 2 x^2 (should be 3 x^2)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, d):
        (x,) = ctx.saved_values
        return 2.0 * x * x * d


def test_derivative_check_catches_a_wrong_derivative_and_names_the_argument():
    f = lambda a, b: a + WrongCube.apply(b)  # noqa: E731 - argument 0 is right, argument 1 wrong
    with pytest.raises(AssertionError, match=r"argument 1") as info:
        derivative_check(f, 0.5, 1.5)
    message = str(info.value)
    got = re.search(r"backward\(\) gives (\S+), central difference gives (\S+)", message)
    assert got, message
    assert float(got.group(1)) == pytest.approx(2.0 * 1.5 ** 2)  # what WrongCube.backward claims
    assert float(got.group(2)) == pytest.approx(3.0 * 1.5 ** 2, rel=1e-6)  # the true derivative
    assert "1.5" in message


def test_derivative_check_leaves_the_given_scalars_untouched():
    x = Scalar(0.4)
    derivative_check(lambda a: a.log(), x)
    assert x.derivative is None


# ---------------------------------------------------------------------------- errors


def test_scalar_errors_name_the_problem():
    with pytest.raises(TypeError, match="str"):
        Scalar("1.0")
    with pytest.raises(TypeError):
        Scalar(1.0) + "a"
    with pytest.raises(TypeError, match="complex"):
        Scalar(1j)
    with pytest.raises(ValueError, match=r"-2\.0"):
        Scalar(-2.0).log()
    with pytest.raises(ValueError, match=r"0\.0"):
        1.0 / Scalar(0.0)
    with pytest.raises(ValueError, match=r"-8\.0.*0\.5"):
        Scalar(-8.0) ** 0.5
    with pytest.raises(ValueError, match=r"x > 0.*-2\.0"):
        Scalar(-2.0) ** Scalar(2.0)
    with pytest.raises(OverflowError, match="800"):
        Scalar(800.0).exp()
    with pytest.raises(RuntimeError, match="requires_grad"):
        (Scalar(1.0, requires_grad=False) * 2.0).backward()
    with pytest.raises(RuntimeError, match="leaf"):
        (Scalar(1.0) * 2.0).requires_grad_(False)


def test_central_difference_and_derivative_check_argument_errors():
    with pytest.raises(ValueError, match=r"arg=2.*2 value"):
        central_difference(lambda a, b: a * b, 1.0, 2.0, arg=2)
    with pytest.raises(ValueError, match="epsilon"):
        central_difference(lambda a: a, 1.0, epsilon=0.0)
    with pytest.raises(TypeError, match="must return a Scalar"):
        derivative_check(lambda a: 3.0, 1.0)


def test_negative_base_with_integer_exponent_is_allowed():
    x = Scalar(-2.0)
    out = x ** 3
    assert out.data == -8.0
    out.backward()
    assert x.derivative == pytest.approx(3 * (-2.0) ** 2)


# ---------------------------------------------------------------------------- Module tree


class Leafy(Module):
    def __init__(self, n):
        super().__init__()
        self.items = [self.add_parameter(f"p{i}", Scalar(float(i))) for i in range(n)]
        self.scale = Parameter(Scalar(2.0))
        self.note = "not a parameter"


class Middle(Module):
    def __init__(self):
        super().__init__()
        self.first = Parameter(Scalar(1.0))
        self.inner = Leafy(2)
        self.last = Parameter(Scalar(3.0))

    def forward(self, x):
        return self.first.value * x + self.last.value


class Top(Module):
    def __init__(self):
        super().__init__()
        self.left = Leafy(1)
        self.bias = Parameter(Scalar(0.5))
        self.right = Middle()


def test_named_parameters_use_dotted_paths_own_parameters_first():
    names = [name for name, _ in Top().named_parameters()]
    assert names == [
        "bias",
        "left.p0", "left.scale",
        "right.first", "right.last",
        "right.inner.p0", "right.inner.p1", "right.inner.scale",
    ]


def test_parameters_children_and_named_modules():
    top = Top()
    assert [p for _, p in top.named_parameters()] == top.parameters()
    assert all(isinstance(p, Parameter) and isinstance(p.value, Scalar) for p in top.parameters())
    assert top.modules() == [top.left, top.right]
    assert top.children() == top.modules()
    assert [name for name, _ in top.named_modules()] == ["left", "right", "right.inner"]
    assert top.right.inner.p1.value.data == 1.0  # add_parameter makes an attribute
    assert top.left.note == "not a parameter"


def test_parameters_require_grad_and_take_their_names():
    frozen = Scalar(1.0, requires_grad=False)
    p = Parameter(frozen, "w")
    assert p.value.requires_grad and p.value.name == "w"
    with pytest.raises(ValueError, match="leaf"):
        Parameter(Scalar(1.0) * 2.0)


def test_train_and_eval_reach_every_module():
    top = Top()
    everything = [top] + [m for _, m in top.named_modules()]
    top.eval()
    assert not any(m.training for m in everything)
    top.right.train()
    assert top.right.training and top.right.inner.training and not top.left.training and not top.training
    top.train()
    assert all(m.training for m in everything)


def test_reassigning_an_attribute_moves_it_between_registries():
    m = Middle()
    m.first = 7  # no longer a parameter
    assert "first" not in [n for n, _ in m.named_parameters()] and m.first == 7
    m.inner = Parameter(Scalar(9.0))  # a module slot becomes a parameter
    assert m.modules() == [] and [n for n, _ in m.named_parameters()] == ["last", "inner"]
    del m.inner
    assert [n for n, _ in m.named_parameters()] == ["last"]


def test_shared_parameter_is_listed_once():
    shared = Parameter(Scalar(1.0))
    m = Module()
    m.a = shared
    m.child = Module()
    m.child.b = shared
    assert m.named_parameters() == [("a", shared)]


def test_call_runs_forward_and_errors_are_clear():
    m = Middle()
    out = m(Scalar(4.0))
    assert out.data == pytest.approx(1.0 * 4.0 + 3.0)
    with pytest.raises(NotImplementedError, match="Top"):
        Top()(1.0)

    class Forgetful(Module):
        def __init__(self):
            self.w = Parameter(Scalar(1.0))

    with pytest.raises(AttributeError, match="super"):
        Forgetful()
    with pytest.raises(AttributeError, match="nothing"):
        _ = Middle().nothing


def test_linear_computes_an_affine_map_and_its_gradients():
    layer = Linear(3, 2, rng=0)
    names = [n for n, _ in layer.named_parameters()]
    assert len(names) == 3 * 2 + 2 and "weight_2_1" in names and "bias_1" in names
    w = [[layer.weights[i][j].value.data for j in range(2)] for i in range(3)]
    b = [layer.bias[j].value.data for j in range(2)]
    x = [0.5, -1.0, 2.0]
    out = layer(x)
    for j in range(2):
        assert out[j].data == pytest.approx(b[j] + sum(x[i] * w[i][j] for i in range(3)))
    (out[0] + 2.0 * out[1]).backward()
    for i in range(3):
        assert layer.weights[i][0].value.derivative == pytest.approx(x[i])
        assert layer.weights[i][1].value.derivative == pytest.approx(2.0 * x[i])
    assert layer.bias[1].value.derivative == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"expects 3 inputs, got 2"):
        layer([1.0, 2.0])
    with pytest.raises(ValueError, match="in_size"):
        Linear(0, 2)


def test_linear_initialisation_is_seeded_and_bounded():
    a, b, c = Linear(4, 3, rng=1), Linear(4, 3, rng=1), Linear(4, 3, rng=2)
    values = lambda m: [p.value.data for p in m.parameters()]  # noqa: E731
    assert values(a) == values(b) != values(c)
    assert all(abs(v) <= 1 / math.sqrt(4) for v in values(a))


def test_network_outputs_the_sigmoid_of_its_logit():
    net = Network(hidden=4, rng=3)
    assert net.modules() == [net.layer1, net.layer2]
    assert len(net.parameters()) == (2 * 4 + 4) + (4 * 1 + 1)
    x = [0.2, -0.6]
    z = net.logit(x).data
    h = [max(0.0, net.layer1.bias[j].value.data + sum(x[i] * net.layer1.weights[i][j].value.data for i in range(2)))
         for j in range(4)]
    expected_z = net.layer2.bias[0].value.data + sum(h[j] * net.layer2.weights[j][0].value.data for j in range(4))
    assert z == pytest.approx(expected_z)
    assert net(x).data == pytest.approx(sigmoid_ref(expected_z))


# ---------------------------------------------------------------------------- SGD and training


def test_sgd_steps_against_the_derivative_and_zero_grad_clears_it():
    m = Middle()
    opt = SGD(m.parameters(), lr=0.1)
    before = {n: p.value.data for n, p in m.named_parameters()}
    out = m(Scalar(4.0))  # d/d first = 4, d/d last = 1, inner unused
    out.backward()
    opt.step()
    after = {n: p.value.data for n, p in m.named_parameters()}
    assert after["first"] == pytest.approx(before["first"] - 0.1 * 4.0)
    assert after["last"] == pytest.approx(before["last"] - 0.1 * 1.0)
    assert after["inner.p0"] == before["inner.p0"]
    opt.zero_grad()
    assert all(p.value.derivative is None for p in m.parameters())
    with pytest.raises(ValueError, match="lr"):
        SGD(m.parameters(), lr=0.0)
    with pytest.raises(TypeError, match="parameter 0"):
        SGD([Scalar(1.0)])


def test_training_on_simple_reaches_high_accuracy_and_loss_decreases():
    seen = []
    result = train_scalar_network("simple", hidden=10, lr=1.0, epochs=50, n=30, seed=0,
                                  on_epoch=lambda e, loss, acc: seen.append((e, loss, acc)))
    assert result.accuracy >= 0.95
    assert len(result.losses) == 50 and [e for e, _, _ in seen] == list(range(1, 51))
    assert [loss for _, loss, _ in seen] == result.losses
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert all(0.0 <= acc <= 1.0 for _, _, acc in seen)


def test_training_on_xor_reaches_high_accuracy():
    result = train_scalar_network("xor", hidden=10, lr=1.0, epochs=250, n=40, seed=0)
    assert result.accuracy >= 0.95
    assert result.losses[-1] < result.losses[0]


def test_reported_loss_and_accuracy_are_the_cross_entropy_and_hit_rate():
    net = Network(hidden=6, rng=5)
    start = [p.value.data for p in net.parameters()]
    X, y = TOY_DATASETS["diag"](n=20, seed=1)
    seen = []
    result = train_scalar_network("diag", hidden=6, lr=0.3, epochs=3, n=20, seed=1, network=net,
                                  on_epoch=lambda e, loss, acc: seen.append((loss, acc)))

    # recompute epoch 1 from the initial weights with plain floats
    fresh = Network(hidden=6, rng=5)
    assert [p.value.data for p in fresh.parameters()] == start
    losses, hits = [], 0
    for (a, b), label in zip(X, y):
        z = fresh.logit([2 * float(a) - 1, 2 * float(b) - 1]).data
        p = sigmoid_ref(z)
        losses.append(-math.log(p if label == 1 else 1 - p))
        hits += (p > 0.5) == (label == 1)
    assert seen[0][0] == pytest.approx(sum(losses) / 20, rel=1e-9)
    assert seen[0][1] == hits / 20

    # the final accuracy is the trained network's hit rate
    final_hits = sum((net.logit([2 * float(a) - 1, 2 * float(b) - 1]).data > 0) == (label == 1)
                     for (a, b), label in zip(X, y))
    assert result.accuracy == final_hits / 20
    assert not net.training


def test_training_errors():
    with pytest.raises(ValueError, match=r"'moons'.*circle"):
        train_scalar_network("moons")
    with pytest.raises(ValueError, match="lr"):
        train_scalar_network("simple", lr=-1.0)
    with pytest.raises(ValueError, match="epochs"):
        train_scalar_network("simple", epochs=0)


# ---------------------------------------------------------------------------- package and example


def test_import_needle_does_not_load_the_scalar_engine():
    code = "import sys, needle; assert 'needle.scalar' not in sys.modules; import needle.scalar; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_example_script_prints_one_line_per_epoch():
    script = ROOT / "examples" / "scalar_train.py"
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0
    for flag in ("--dataset", "--hidden", "--epochs", "--lr"):
        assert flag in help_text.stdout
    run = subprocess.run([sys.executable, str(script), "--dataset", "split", "--epochs", "3", "--n", "12",
                          "--hidden", "3", "--lr", "0.2"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    epochs = [line for line in run.stdout.splitlines() if line.startswith("epoch")]
    assert [int(line.split()[1]) for line in epochs] == [1, 2, 3]
    assert all("loss" in line and "accuracy" in line for line in epochs)
    bad = subprocess.run([sys.executable, str(script), "--dataset", "nope"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "nope" in bad.stderr
