"""numpy meeting a Tensor: ``ndarray <op> tensor`` is the tensor's reflected operator (a node
of the graph), every other numpy ufunc or function that would compute outside the graph
raises NumpyFunctionError naming the unrollgraph function to use, and the functions that
only read a value read it."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import unrollgraph as ug
from unrollgraph import interop

OPERATORS = {
    "+": (operator.add, "__radd__"), "-": (operator.sub, "__rsub__"),
    "*": (operator.mul, "__rmul__"), "/": (operator.truediv, "__rtruediv__"),
    "**": (operator.pow, "__rpow__"), "<": (operator.lt, "__gt__"),
    "<=": (operator.le, "__ge__"), ">": (operator.gt, "__lt__"),
    ">=": (operator.ge, "__le__"),
}

values = hnp.arrays(np.float64, st.sampled_from([(3,), (2, 3)]),
                    elements=st.floats(0.5, 2.0))


@settings(max_examples=30, deadline=None)
@given(a=values, b=st.lists(st.floats(0.5, 2.0), min_size=3, max_size=3),
       sign=st.sampled_from(sorted(OPERATORS)))
def test_ndarray_op_tensor_is_the_tensors_reflected_operator(a, b, sign):
    fn, reflected = OPERATORS[sign]
    t = ug.tensor(b, requires_grad=True, name="t")
    got = fn(a, t)
    want = getattr(t, reflected)(a)
    assert isinstance(got, ug.Tensor) and got.node.op == want.node.op
    np.testing.assert_array_equal(got.data, fn(a, np.array(b)).astype(float))
    if sign in "+-*/**":  # arithmetic: the gradient reaches the tensor, as t's own op's does
        ug.gradcheck(lambda u: fn(a, u), [np.array(b)])


@settings(max_examples=10, deadline=None)
@given(m=hnp.arrays(np.float64, (2, 3), elements=st.floats(-2, 2)))
def test_ndarray_matmul_tensor_and_np_matmul_are_nodes_with_gradients(m):
    t = ug.tensor(np.arange(3.0), requires_grad=True)
    for got in (m @ t, np.matmul(m, t), np.float64(2.0) * t):
        assert isinstance(got, ug.Tensor)
    ug.gradcheck(lambda u: m @ u, [np.arange(3.0)])


def test_np_add_with_the_tensor_first_is_the_tensors_operator():
    t = ug.tensor([1.0, 2.0], requires_grad=True)
    out = np.add(t, np.ones(2))
    assert isinstance(out, ug.Tensor) and out.node.op == "add"


UFUNCS = {
    "np.exp": (lambda t: np.exp(t), "ug.exp(x)"),
    "np.log": (lambda t: np.log(t), "ug.log(x)"),
    "np.tanh": (lambda t: np.tanh(t), "ug.tanh(x)"),
    "np.sqrt": (lambda t: np.sqrt(t), "ug.sqrt(x)"),
    "np.absolute": (lambda t: np.abs(t), "ug.abs(x)"),
    "np.maximum": (lambda t: np.maximum(t, 0.0), "ug.maximum(a, b)"),
    "np.negative": (lambda t: np.negative(t), "-x"),
    "np.add.reduce": (lambda t: np.add.reduce(t), "ug.sum(x"),
    "np.maximum.reduce": (lambda t: np.maximum.reduce(t), "ug.max(x"),
    "np.sin": (lambda t: np.sin(t), "no counterpart of np.sin"),
    "np.floor_divide": (lambda t: np.ones(2) // t, "no counterpart of np.floor_divide"),
    "np.add": (lambda t: np.add(np.ones(2), t, out=np.zeros(2)), "a = a + t"),
}


@pytest.mark.parametrize("name", sorted(UFUNCS))
@pytest.mark.parametrize("grad", [False, True])
def test_other_ufuncs_raise_naming_numpys_and_unrollgraphs_function(name, grad):
    fn, advice = UFUNCS[name]
    t = ug.tensor([1.0, 2.0], requires_grad=grad, name="t")
    with pytest.raises(ug.NumpyFunctionError) as err:
        fn(t)
    assert name in str(err.value) and advice in str(err.value)
    assert err.value.function == name and isinstance(err.value, TypeError)


def test_array_plus_equals_tensor_raises_and_leaves_the_array():
    a = np.zeros(2)
    with pytest.raises(ug.NumpyFunctionError, match="a = a [+] t"):
        a += ug.tensor([1.0, 2.0])
    np.testing.assert_array_equal(a, [0.0, 0.0])


def test_out_equal_a_tensor_is_refused():
    t = ug.tensor([1.0, 2.0])
    with pytest.raises(ug.NumpyFunctionError, match="out=t"):
        np.exp(np.ones(2), out=t)


def test_every_counterpart_named_exists_in_the_package():
    for text in interop.COUNTERPARTS.values():
        for word in text.replace("(", " ").split():
            if word.startswith("ug."):
                assert callable(getattr(ug, word[3:])), word


def test_equality_with_an_array_stays_identity_as_between_tensors():
    t = ug.tensor([1.0, 2.0])
    a = np.array([1.0, 2.0])
    assert (a == t) is False and (a != t) is True and (t == a) is False
    assert t in [t] and t not in [a]  # membership tests keep working


FUNCTIONS = {
    "sum": (lambda t: np.sum(t), "ug.sum(x"), "mean": (lambda t: np.mean(t), "ug.mean(x"),
    "max": (lambda t: np.max(t), "ug.max(x"),
    "dot": (lambda t: np.dot(np.ones(2), t), "a @ b"),
    "stack": (lambda t: np.stack([t, t]), "ug.stack("),
    "concatenate": (lambda t: np.concatenate([t, t]), "ug.concat("),
    "where": (lambda t: np.where(np.ones(2) > 0, t, 0.0), "ug.where("),
    "reshape": (lambda t: np.reshape(t, (2, 1)), "ug.reshape("),
    "transpose": (lambda t: np.transpose(t), "ug.transpose("),
    "clip": (lambda t: np.clip(t, 0, 1), "ug.clip("),
    "einsum": (lambda t: np.einsum("i,i", t, t), "no counterpart of np.einsum"),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("kind", ["requires grad", "computed"])
def test_numpy_functions_on_a_graph_tensor_raise_naming_the_ug_function(name, kind):
    fn, advice = FUNCTIONS[name]
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    t = w if kind == "requires grad" else w * 1.0
    with pytest.raises(ug.NumpyFunctionError) as err:
        fn(t)
    assert f"np.{name}" in str(err.value) and advice in str(err.value)
    assert kind.split()[0] in str(err.value)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_numpy_functions_on_a_plain_constant_compute_on_its_value(name):
    fn, _ = FUNCTIONS[name]
    t = ug.tensor([1.0, 2.0])
    np.testing.assert_array_equal(fn(t), fn(np.array([1.0, 2.0])))


def test_readers_read_the_value_of_any_tensor_outside_a_cell():
    w = ug.tensor([1.0, np.inf], requires_grad=True)
    out = w * 2.0
    assert not np.allclose(out, [2.0, 3.0]) and np.allclose(w, [1.0, np.inf])
    np.testing.assert_array_equal(np.isfinite(out), [True, False])
    assert np.shape(out) == (2,) and np.argmax(w) == 1
    np.testing.assert_array_equal(np.asarray(out), [2.0, np.inf])


def test_outputs_of_a_net_compare_with_numpy():
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2)
    out, h = net(np.ones((2, 1, 2)))
    assert np.allclose(out[-1], h)
    with pytest.raises(ug.NumpyFunctionError, match="ug.sum"):
        np.sum(out)


def test_python_abs_is_ug_abs_with_its_gradient():
    """``abs(t)`` (Python's builtin) records one ``abs`` node, as ``ug.abs(t)`` does, and
    checks against finite differences (it raised a bare TypeError)."""
    w = ug.tensor(np.array([[-1.5, 0.25], [2.0, -0.75]]), requires_grad=True)
    y = abs(w)
    assert y.node.op == "abs"
    np.testing.assert_array_equal(y.data, np.abs(w.data))
    (y * np.array([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    np.testing.assert_array_equal(w.grad, np.array([[-1.0, 2.0], [3.0, -4.0]]))
    assert ug.gradcheck(lambda a: abs(a * 1.0).sum(), [ug.tensor(np.array([-1.5, 0.5, 2.0]))])
