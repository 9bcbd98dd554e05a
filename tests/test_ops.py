"""Every registered op: gradcheck on random shapes (with broadcasting), its VJP against the
derivative of its sympy form, and float32 in -> float32 out.

Each op has one case builder below. ``test_every_op_has_a_case`` fails when an op is added to
the registry without a builder here, so no op goes untested.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import unrollgraph as ug
from unrollgraph.ops import get_op, registry
from unrollgraph.tensor import apply

#: internal plumbing ops of multi-output nodes (an unrolled run and picking one of its
#: outputs); they are exercised by the unroller's tests, not here.
PLUMBING = {"item", "unrolled"}


@dataclass
class Case:
    """Arguments of one op call: arrays, static attributes, and the constant positions."""

    args: list
    attrs: dict = field(default_factory=dict)
    const: frozenset = frozenset()  # positions that get no gradient (labels, conditions)

    @property
    def diff(self) -> list:
        return [k for k in range(len(self.args)) if k not in self.const]

    def call(self, *tensors, name=None, **extra):
        """Apply ``name`` with ``tensors`` in the differentiable slots, constants elsewhere."""
        it = iter(tensors)
        full = [self.args[k] if k in self.const else next(it) for k in range(len(self.args))]
        return apply(name, *full, **self.attrs, **extra)


SIDE = 3


def _rng(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _away_from_zero(rng, shape, lo=0.3, hi=2.0):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(lo, hi, size=shape)


def _shape(draw, min_dims=0, max_dims=3, min_side=1):
    return draw(array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                             max_side=SIDE))


def _two_shapes(draw, n=2, max_dims=3):
    shapes, _ = draw(mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=max_dims,
                                                   max_side=SIDE))
    return shapes


def _axis(draw, ndim):
    """None, one axis (maybe negative) or a tuple of distinct axes."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(axes)


# -- case builders: one per op ---------------------------------------------------------------

BUILDERS = {}


def builder(*names):
    def register(fn):
        for n in names:
            BUILDERS[n] = fn
        return fn

    return register


@builder("add", "sub", "mul")
@st.composite
def _arith(draw, name):
    rng = _rng(draw)
    sa, sb = _two_shapes(draw)
    return Case([rng.normal(size=sa), rng.normal(size=sb)])


@builder("div")
@st.composite
def _div(draw, name):
    rng = _rng(draw)
    sa, sb = _two_shapes(draw)
    return Case([rng.normal(size=sa), _away_from_zero(rng, sb, 0.5)])


@builder("pow")
@st.composite
def _pow(draw, name):
    rng = _rng(draw)
    sa, sb = _two_shapes(draw)
    return Case([rng.uniform(0.5, 2.0, size=sa), rng.uniform(-2.0, 2.0, size=sb)])


@builder("powc")
@st.composite
def _powc(draw, name):
    rng = _rng(draw)
    p = draw(st.sampled_from([2.0, 3.0, -1.0, 0.5, 1.5, -2.5]))
    shape = _shape(draw)
    base = rng.uniform(0.5, 2.0, size=shape)
    if p in (2.0, 3.0, -1.0):  # integer exponents: negative bases are fine
        base = base * rng.choice([-1.0, 1.0], size=shape)
    return Case([base], {"p": p})


@builder("maximum", "minimum")
@st.composite
def _maxmin(draw, name):
    rng = _rng(draw)
    sa, sb = _two_shapes(draw)
    # integers against half-integers: never equal, so never on the kink
    a = rng.integers(-3, 3, size=sa).astype(float)
    b = rng.integers(-3, 3, size=sb) + 0.5
    return Case([a, b] if draw(st.booleans()) else [b, a])


@builder("neg", "exp", "tanh", "sigmoid")
@st.composite
def _unary(draw, name):
    rng = _rng(draw)
    return Case([rng.normal(scale=1.5, size=_shape(draw))])


@builder("log", "sqrt")
@st.composite
def _positive(draw, name):
    rng = _rng(draw)
    return Case([rng.uniform(0.5, 3.0, size=_shape(draw))])


@builder("relu", "abs")
@st.composite
def _kinked(draw, name):
    rng = _rng(draw)
    return Case([_away_from_zero(rng, _shape(draw), 0.1)])


@builder("clip")
@st.composite
def _clip(draw, name):
    rng = _rng(draw)
    lo = draw(st.sampled_from([None, -0.5]))
    hi = draw(st.sampled_from([None, 0.5]))
    shape = _shape(draw)
    inside = rng.uniform(-0.4, 0.4, size=shape)
    outside = _away_from_zero(rng, shape, 0.6, 2.0)
    x = np.where(rng.random(size=shape) < 0.5, inside, outside)
    return Case([x], {"lo": lo, "hi": hi})


@builder("where")
@st.composite
def _where(draw, name):
    rng = _rng(draw)
    sc, sa, sb = _two_shapes(draw, 3)
    return Case([rng.random(size=sc) < 0.5, rng.normal(size=sa), rng.normal(size=sb)],
                const=frozenset({0}))


@builder("gt", "ge", "lt", "le")
@st.composite
def _compare(draw, name):
    rng = _rng(draw)
    sa, sb = _two_shapes(draw)
    a = _away_from_zero(rng, sa, 0.1)
    b = np.where(rng.random(size=sb) < 0.3, 0.0, _away_from_zero(rng, sb, 0.1))
    return Case([a, b])  # tensors in both slots: the op gives neither a gradient


@builder("matmul")
@st.composite
def _matmul(draw, name):
    rng = _rng(draw)
    m, k, n = (draw(st.integers(1, SIDE)) for _ in range(3))
    batch_a, batch_b = _two_shapes(draw, max_dims=2)
    kind = draw(st.sampled_from(["vv", "vm", "mv", "mm", "bb", "vb", "bv"]))
    sa = {"vv": (k,), "vm": (k,), "mv": (m, k), "mm": (m, k), "bb": batch_a + (m, k),
          "vb": (k,), "bv": batch_a + (m, k)}[kind]
    sb = {"vv": (k,), "vm": (k, n), "mv": (k,), "mm": (k, n), "bb": batch_b + (k, n),
          "vb": batch_b + (k, n), "bv": (k,)}[kind]
    return Case([rng.normal(size=sa), rng.normal(size=sb)])


@builder("sum", "mean")
@st.composite
def _reduce(draw, name):
    rng = _rng(draw)
    shape = _shape(draw)
    return Case([rng.normal(size=shape)],
                {"axis": _axis(draw, len(shape)), "keepdims": draw(st.booleans())})


@builder("max")
@st.composite
def _max(draw, name):
    rng = _rng(draw)
    shape = _shape(draw)
    size = int(np.prod(shape))
    # distinct values 0.5 apart: the maximum is unique and stays put under eps perturbation
    x = (rng.permutation(size) * 0.5 - size / 4).reshape(shape)
    return Case([x], {"axis": _axis(draw, len(shape)), "keepdims": draw(st.booleans())})


@builder("reshape")
@st.composite
def _reshape(draw, name):
    rng = _rng(draw)
    shape = _shape(draw)
    size = int(np.prod(shape))
    target = draw(st.sampled_from([(size,), (-1,), shape[::-1], (1, size), (size, 1, -1)]))
    return Case([rng.normal(size=shape)], {"shape": tuple(target)})


@builder("transpose")
@st.composite
def _transpose(draw, name):
    rng = _rng(draw)
    shape = _shape(draw)
    nd = len(shape)
    axes = None
    if nd and draw(st.booleans()):
        perm = draw(st.permutations(range(nd)))
        axes = tuple(a - nd if draw(st.booleans()) else a for a in perm)
    return Case([rng.normal(size=shape)], {"axes": axes})


@builder("getitem")
@st.composite
def _getitem(draw, name):
    rng = _rng(draw)
    shape = _shape(draw, min_dims=1)
    n0 = shape[0]
    kind = draw(st.sampled_from(
        ["int", "neg_int", "slice", "step", "reverse", "newaxis", "ellipsis", "array",
         "repeated", "pair", "mask", "mixed"]
    ))
    if kind == "int":
        index = draw(st.integers(0, n0 - 1))
    elif kind == "neg_int":
        index = -1
    elif kind == "slice":
        index = slice(0, draw(st.integers(1, n0)))
    elif kind == "step":
        index = slice(None, None, 2)
    elif kind == "reverse":
        index = slice(None, None, -1)
    elif kind == "newaxis":
        index = (None, slice(None))
    elif kind == "ellipsis":
        index = (Ellipsis, 0)
    elif kind == "array":
        index = rng.integers(0, n0, size=draw(st.integers(1, 4)))
    elif kind == "repeated":  # the same element picked several times: gradients add up
        index = np.array([n0 - 1, 0, n0 - 1, n0 - 1])
    elif kind == "pair" and len(shape) >= 2:
        index = (np.array([0, n0 - 1, 0]), np.array([shape[1] - 1, 0, shape[1] - 1]))
    elif kind == "mask":
        index = rng.random(size=shape) < 0.5
    else:
        index = (slice(None), np.array([0, 0])) if len(shape) >= 2 else np.array([0, 0])
    return Case([rng.normal(size=shape)], {"index": index})


@builder("concat")
@st.composite
def _concat(draw, name):
    rng = _rng(draw)
    shape = _shape(draw, min_dims=1)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    args = []
    for _ in range(draw(st.integers(1, 3))):
        s = list(shape)
        s[axis] = draw(st.integers(1, SIDE))
        args.append(rng.normal(size=tuple(s)))
    return Case(args, {"axis": axis})


@builder("stack")
@st.composite
def _stack(draw, name):
    rng = _rng(draw)
    shape = _shape(draw)
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    n = draw(st.integers(1, 3))
    return Case([rng.normal(size=shape) for _ in range(n)], {"axis": axis})


@builder("softmax", "log_softmax")
@st.composite
def _softmax(draw, name):
    rng = _rng(draw)
    shape = _shape(draw, min_dims=1)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return Case([rng.normal(scale=2.0, size=shape)], {"axis": axis})


@builder("mse_loss")
@st.composite
def _mse(draw, name):
    rng = _rng(draw)
    shape = _shape(draw)
    return Case([rng.normal(size=shape), rng.normal(size=shape)])


@builder("cross_entropy")
@st.composite
def _ce(draw, name):
    rng = _rng(draw)
    lead = _shape(draw, min_dims=0, max_dims=2)
    classes = draw(st.integers(1, 4))
    labels = rng.integers(0, classes, size=lead)
    return Case([rng.normal(scale=2.0, size=lead + (classes,)), labels], const=frozenset({1}))


@builder("binary_cross_entropy_with_logits")
@st.composite
def _bce(draw, name):
    rng = _rng(draw)
    shape = _shape(draw)
    return Case([rng.normal(scale=2.0, size=shape), rng.uniform(0.0, 1.0, size=shape)])


OPS = sorted(BUILDERS)


def test_every_op_has_a_case():
    """A new op in the registry without a case builder here makes this test fail."""
    assert set(BUILDERS) == set(registry()) - PLUMBING


# -- gradcheck ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_gradcheck(name, data):
    case = data.draw(BUILDERS[name](name))
    inputs = [case.args[k] for k in case.diff]
    if _no_gradient(name):  # a comparison: tensors that require grad give a value without one
        ts = [ug.tensor(a, requires_grad=True) for a in inputs]
        out = case.call(*ts, name=name)
        assert not out.requires_grad
        with pytest.raises(ug.GradientError, match="does not require grad"):
            out.sum().backward()
        return
    assert ug.gradcheck(lambda *ts: case.call(*ts, name=name), inputs)


def _no_gradient(name) -> bool:
    """An op none of whose inputs gets a gradient (the comparisons)."""
    op = get_op(name)
    return set(op.nondiff) == set(range(len(op.vjps)))


# -- the sympy form differentiates to the VJP --------------------------------------------------


def _symbols(tag, shape):
    size = int(np.prod(shape))
    syms = [sp.Symbol(f"{tag}_{i}", real=True) for i in range(size)]
    return np.array(syms, dtype=object).reshape(shape)


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_sym_matches_vjp(name, data):
    op = get_op(name)
    case = data.draw(BUILDERS[name](name))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    values = [np.asarray(a) if k in case.const else np.asarray(a, dtype=np.float64)
              for k, a in enumerate(case.args)]
    ans = np.asarray(op.forward(*values, **case.attrs))
    syms = {k: _symbols(f"x{k}", values[k].shape) for k in case.diff}
    sym_args = [syms.get(k, values[k]) for k in range(len(values))]
    out = np.asarray(op.sym(*sym_args, **case.attrs), dtype=object)
    assert out.shape == ans.shape, f"{name}: sym gives shape {out.shape}, forward {ans.shape}"
    subs = {s: float(v) for k in case.diff for s, v in zip(syms[k].flat, values[k].flat)}
    # the sympy form evaluates to the forward value
    sym_value = np.array([float(sp.sympify(e).xreplace(subs)) for e in out.flat])
    np.testing.assert_allclose(sym_value, ans.reshape(-1), rtol=1e-9, atol=1e-12)
    g = rng.normal(size=ans.shape)
    loss = sp.Add(*[gi * e for gi, e in zip(g.flat, out.flat)])
    grads = op.vjp(g, ans, *values, **case.attrs)
    assert len(grads) == len(values)
    for k in case.diff:
        expected = np.array([float(sp.diff(loss, s).xreplace(subs)) for s in syms[k].flat])
        if k in op.nondiff:  # a step function: flat where it is differentiable, no gradient
            assert grads[k] is None, f"{name}: input {k} got a gradient"
            assert not np.any(expected), f"{name}: the sympy form has a slope in input {k}"
            continue
        got = np.broadcast_to(grads[k], values[k].shape).reshape(-1)
        assert np.shape(grads[k]) == values[k].shape, f"{name}: grad {k} has the wrong shape"
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12,
                                   err_msg=f"{name}: VJP of input {k} differs from sympy")
    for k in case.const:
        assert grads[k] is None, f"{name}: constant input {k} got a gradient"


# -- float32 in, float32 out ------------------------------------------------------------------


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_float32_end_to_end(name, data):
    case = data.draw(BUILDERS[name](name))
    ts = [ug.tensor(case.args[k], dtype=np.float32, requires_grad=True) for k in case.diff]
    out = case.call(*ts, name=name)
    assert out.dtype == np.float32, f"{name}: float32 inputs gave a {out.dtype} value"
    if _no_gradient(name):
        assert not out.requires_grad
        return
    (out * 1.0).sum().backward()
    for t in ts:
        assert t.grad is not None and t.grad.dtype == np.float32
        assert t.grad.shape == t.shape
    # and the float32 gradient agrees with the float64 one
    ts64 = [ug.tensor(case.args[k], requires_grad=True) for k in case.diff]
    case.call(*ts64, name=name).sum().backward()
    for t32, t64 in zip(ts, ts64):
        np.testing.assert_allclose(t32.grad, t64.grad, rtol=2e-3, atol=2e-4)


# -- derivatives at boundary points -----------------------------------------------------------
# Each row: inputs (a constant slot given as a plain array, see CONST), attributes, the expected
# value and the expected gradient of sum(g * out) for each input (g = ones unless given). The
# expected numbers are the mathematical limit where one exists, and PyTorch's documented
# convention where the derivative is a choice: relu'(0) = abs'(0) = 0, d/dx x**0 = 0 also at 0,
# ties in maximum/minimum/max split the gradient evenly, clip's bounds are inside the range.

INF, NAN = np.inf, np.nan


@dataclass
class Edge:
    args: list
    out: object
    grads: list  # one per input; None for a constant input
    attrs: dict = field(default_factory=dict)
    g: object = None
    why: str = ""


def _e(args, out, grads, why="", g=None, **attrs):
    return Edge([np.asarray(a, dtype=None if isinstance(a, np.ndarray) and a.dtype == bool
                            else np.float64) for a in args], out, grads, attrs, g, why)


BOUNDARY = {
    "add": [_e([INF, 1.0], INF, [1.0, 1.0]), _e([INF, -INF], NAN, [1.0, 1.0], "inf - inf")],
    "sub": [_e([INF, INF], NAN, [1.0, -1.0], "the slope is 1 whatever the value")],
    "mul": [_e([0.0, INF], NAN, [INF, 0.0], "0 * inf, as IEEE and PyTorch"),
            _e([0.0, 0.0], 0.0, [0.0, 0.0])],
    "div": [_e([1.0, 0.0], INF, [INF, -INF], "1/b and -a/b**2 at b = 0"),
            _e([0.0, 0.0], NAN, [INF, NAN]),
            _e([1.0, INF], 0.0, [0.0, 0.0], "the limits at b = inf")],
    "pow": [_e([0.0, 0.0], 1.0, [0.0, 0.0], "0**0 = 1 is a constant: both slopes 0"),
            _e([0.0, 1.0], 0.0, [1.0, 0.0]),
            _e([0.0, 2.0], 0.0, [0.0, 0.0]),
            _e([0.0, 0.5], 0.0, [INF, 0.0], "sqrt has an infinite slope at 0"),
            _e([0.0, -1.0], INF, [-INF, -INF], "PyTorch: inf * log(0)"),
            _e([2.0, 0.0], 1.0, [0.0, np.log(2.0)]),
            _e([-2.0, 2.0], 4.0, [-4.0, NAN], "a real power of a < 0: no slope in b"),
            _e([-2.0, 3.0], -8.0, [12.0, NAN]),
            _e([-8.0, 1 / 3], NAN, [NAN, NAN])],
    "powc": [_e([0.0], 1.0, [0.0], p=0.0, why="the issue's x**0 at 0"),
             _e([INF], 1.0, [0.0], p=0.0), _e([-2.0], 1.0, [0.0], p=0.0),
             _e([0.0], 0.0, [1.0], p=1.0), _e([0.0], 0.0, [0.0], p=2.0),
             _e([0.0], 0.0, [INF], p=0.5), _e([0.0], INF, [-INF], p=-1.0),
             _e([0.0], INF, [-INF], p=-2.0, why="the slope from the right"),
             _e([-3.0], 9.0, [-6.0], p=2.0), _e([-INF], -INF, [INF], p=3.0),
             _e([-1.0], NAN, [NAN], p=0.5)],
    "neg": [_e([INF], -INF, [-1.0])],
    "maximum": [_e([1.0, 1.0], 1.0, [0.5, 0.5], "a tie splits the gradient"),
                _e([INF, INF], INF, [0.5, 0.5]), _e([-INF, 0.0], 0.0, [0.0, 1.0]),
                _e([NAN, 1.0], NAN, [1.0, 1.0], "PyTorch: a NaN input takes the gradient")],
    "minimum": [_e([2.0, 2.0], 2.0, [0.5, 0.5]), _e([-INF, 0.0], -INF, [1.0, 0.0])],
    "exp": [_e([-INF], 0.0, [0.0]), _e([INF], INF, [INF]), _e([0.0], 1.0, [1.0]),
            _e([1000.0], INF, [INF], "overflow")],
    "log": [_e([0.0], -INF, [INF]), _e([INF], INF, [0.0]),
            _e([-1.0], NAN, [-1.0], "PyTorch: 1/x, the value is NaN")],
    "tanh": [_e([INF], 1.0, [0.0]), _e([-INF], -1.0, [0.0]), _e([0.0], 0.0, [1.0]),
             _e([20.0], 1.0, [0.0], "saturated: exactly 1 and 0")],
    "sigmoid": [_e([INF], 1.0, [0.0]), _e([-INF], 0.0, [0.0]), _e([0.0], 0.5, [0.25]),
                _e([-800.0], 0.0, [0.0], "exp(800) overflows inside: the limit, silently"),
                _e([800.0], 1.0, [0.0])],
    "relu": [_e([0.0], 0.0, [0.0], "relu'(0) = 0"), _e([-0.0], 0.0, [0.0]),
             _e([INF], INF, [1.0]), _e([-INF], 0.0, [0.0])],
    "sqrt": [_e([0.0], 0.0, [INF]), _e([INF], INF, [0.0]), _e([-1.0], NAN, [NAN])],
    "abs": [_e([0.0], 0.0, [0.0], "abs'(0) = 0"), _e([-INF], INF, [-1.0]),
            _e([INF], INF, [1.0])],
    "clip": [_e([1.0], 1.0, [1.0], lo=-1.0, hi=1.0, why="a bound is inside the range"),
             _e([-1.0], -1.0, [1.0], lo=-1.0, hi=1.0), _e([2.0], 1.0, [0.0], lo=-1.0, hi=1.0),
             _e([INF], 1.0, [0.0], lo=-1.0, hi=1.0), _e([-INF], -1.0, [0.0], lo=-1.0, hi=1.0),
             _e([INF], INF, [1.0], lo=None, hi=None)],
    "where": [_e([np.array(True), 1.0, INF], 1.0, [None, 1.0, 0.0]),
              _e([np.array(False), NAN, 2.0], 2.0, [None, 0.0, 1.0],
                 "the unselected NaN gets no gradient")],
    "matmul": [_e([[[1.0, 0.0]], [[INF], [1.0]]], [[INF]], [[[INF, 1.0]], [[1.0], [0.0]]]),
               _e([[[0.0, 0.0]], [[1.0], [2.0]]], [[0.0]], [[[1.0, 2.0]], [[0.0], [0.0]]])],
    "sum": [_e([[INF, 1.0]], INF, [[1.0, 1.0]]), _e([[INF, -INF]], NAN, [[1.0, 1.0]])],
    "mean": [_e([[INF, 1.0]], INF, [[0.5, 0.5]])],
    "max": [_e([[1.0, 3.0, 3.0]], 3.0, [[0.0, 0.5, 0.5]], "ties share, as PyTorch's amax"),
            _e([[INF, INF, 0.0]], INF, [[0.5, 0.5, 0.0]]),
            _e([[-INF, -INF]], -INF, [[0.5, 0.5]]),
            _e([[1.0, NAN, 2.0]], NAN, [[0.0, 1.0, 0.0]], "PyTorch: the NaN takes it"),
            _e([[[1.0, 1.0], [2.0, 0.0]]], [1.0, 2.0], [[[0.5, 0.5], [1.0, 0.0]]], axis=1)],
    "reshape": [_e([[INF, 0.0]], [[INF], [0.0]], [[1.0, 1.0]], shape=(2, 1))],
    "transpose": [_e([[[INF, 0.0]]], [[INF], [0.0]], [[[1.0, 1.0]]])],
    "getitem": [_e([[INF, 0.0]], INF, [[1.0, 0.0]], index=0),
                _e([[INF, 0.0]], [INF, INF], [[2.0, 0.0]], index=np.array([0, 0]))],
    "concat": [_e([[INF], [0.0]], [INF, 0.0], [[1.0], [1.0]])],
    "stack": [_e([[INF], [-INF]], [[INF], [-INF]], [[1.0], [1.0]])],
    "softmax": [_e([[-INF, 0.0]], [0.0, 1.0], [[0.0, 0.0]], g=np.array([1.0, 2.0]),
                   why="a saturated softmax has slope 0"),
                _e([[0.0, 0.0]], [0.5, 0.5], [[0.25, -0.25]], g=np.array([1.0, 0.0])),
                _e([[1000.0, 0.0]], [1.0, 0.0], [[0.0, 0.0]], g=np.array([1.0, 2.0]))],
    "log_softmax": [_e([[-INF, 0.0]], [-INF, 0.0], [[1.0, -1.0]]),
                    _e([[1000.0, 0.0]], [0.0, -1000.0], [[-1.0, 1.0]])],
    "mse_loss": [_e([[1.0, 2.0], [1.0, 2.0]], 0.0, [[0.0, 0.0], [0.0, 0.0]])],
    "cross_entropy": [_e([[[-INF, 0.0]], np.array([1])], 0.0, [[[0.0, 0.0]], None]),
                      _e([[[0.0, 0.0]], np.array([0])], np.log(2.0), [[[-0.5, 0.5]], None]),
                      _e([[[1000.0, 0.0]], np.array([1])], 1000.0, [[[1.0, -1.0]], None])],
    "binary_cross_entropy_with_logits": [
        _e([0.0, 1.0], np.log(2.0), [-0.5, 0.0]),
        _e([-800.0, 0.0], 0.0, [0.0, 800.0], "saturated: the limits, silently"),
        _e([800.0, 1.0], 0.0, [0.0, -800.0]),
        _e([40.0, 1.0], 0.0, [0.0, -40.0])],
}
_CMP = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal}
for _name, _fn in _CMP.items():  # ties, infinities, -0.0 and NaN (every comparison is false)
    BOUNDARY[_name] = [
        _e([a, b], float(_fn(a, b)), [None, None], "no gradient")
        for a, b in ((1.0, 1.0), (0.0, -0.0), (INF, INF), (-INF, 0.0), (NAN, 0.0), (0.0, NAN),
                     (2.0, 1.0), (1.0, 2.0))
    ]
del _name, _fn
CONST = {"where": {0}, "cross_entropy": {1}, **{k: {0, 1} for k in _CMP}}


def test_every_op_has_boundary_cases():
    """A new op in the registry without boundary rows here makes this test fail."""
    assert set(BOUNDARY) == set(registry()) - PLUMBING


def _finite(*values) -> bool:
    return all(np.all(np.isfinite(np.asarray(v, dtype=np.float64)))
               for v in values if v is not None)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(BOUNDARY))
def test_derivatives_at_boundary_points(name, dtype):
    const = CONST.get(name, set())
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-7)
    for case in BOUNDARY[name]:
        ts = [a if k in const else ug.tensor(a, requires_grad=True, dtype=dtype)
              for k, a in enumerate(case.args)]
        where = f"{name}{tuple(np.asarray(a).tolist() for a in case.args)} {case.attrs}"
        # a finite answer must come without numpy warnings (they are errors in the suite);
        # an infinite or NaN one is what numpy warns about, so those are computed quietly
        quiet = not _finite(case.out, *case.grads)
        mode = "ignore" if quiet else "raise"
        if not any(isinstance(t, ug.Tensor) for t in ts):  # no input takes a gradient
            ts = [ug.tensor(a, requires_grad=True, dtype=dtype) for a in case.args]
            with np.errstate(all="raise"):
                out = apply(name, *ts, **case.attrs)
            assert out.dtype == dtype and not out.requires_grad, where
            np.testing.assert_array_equal(out.data, case.out, err_msg=f"value of {where}")
            continue
        with np.errstate(divide=mode, over=mode, invalid=mode):
            out = apply(name, *ts, **case.attrs)
            g = np.ones(out.shape) if case.g is None else case.g
            out.backward(gradient=g)
        assert out.dtype == dtype, f"{where}: a {out.dtype} value from {dtype.__name__}"
        np.testing.assert_allclose(out.data, case.out, **tol, err_msg=f"value of {where}")
        for k, (t, want) in enumerate(zip(ts, case.grads)):
            if want is None:
                assert k in const
                continue
            assert t.grad is not None, f"{where}: no gradient for input {k}"
            assert t.grad.dtype == dtype
            np.testing.assert_allclose(t.grad, want, **tol,
                                       err_msg=f"gradient of input {k} of {where}")


def test_polynomial_with_a_zero_power_has_slope_minus_one_at_zero():
    """d/dx (0.5 + 2x**2 - x + 3x**0) at x = 0 is -1 (x**0 is the constant 1, also at 0)."""
    x = ug.tensor(0.0, requires_grad=True)
    y = 0.5 + 2 * x**2 - x + 3 * x**0
    assert y.item() == 3.5
    y.backward()
    assert x.grad == -1.0
    # the same through the two-tensor pow op (a tensor exponent), and in float32
    x = ug.tensor(0.0, requires_grad=True)
    (0.5 + 2 * x**2 - x + 3 * x ** ug.tensor(0.0)).backward()
    assert x.grad == -1.0
    x = ug.tensor(0.0, requires_grad=True, dtype=np.float32)
    (0.5 + 2 * x**2 - x + 3 * x**0).backward()
    assert x.grad == -1.0 and x.grad.dtype == np.float32


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_an_unrolled_net_at_boundary_points_matches_the_eager_graph(keep):
    """The compiled step functions use the same boundary rules: h**0, abs and relu at h = 0."""
    def body(x, h, W, b):
        return ug.tanh(x * W + b * h**0 + ug.abs(h) * W + ug.relu(h - h))

    cell = ug.Cell("edge")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.array([0.5, -1.0]))
    b = cell.param("b", np.array([0.0, 0.0]))
    cell.feedback(h, body(x, h, W, b))
    cell.output("y", h)  # the state before the step: 0 at step 0
    xs = np.zeros((3, 1, 2))
    xs[2] = 1.0
    out, _ = ug.unroll(cell, steps=3, keep=keep)(xs)
    out.sum().backward()
    We = ug.tensor([0.5, -1.0], requires_grad=True)
    be = ug.tensor([0.0, 0.0], requires_grad=True)
    he = ug.tensor(np.zeros((1, 2)))
    total = None
    for t in range(3):
        total = he.sum() if total is None else total + he.sum()
        he = body(ug.tensor(xs[t]), he, We, be)
    total.backward()
    assert np.all(np.isfinite(W.grad)) and np.all(np.isfinite(b.grad))
    np.testing.assert_allclose(W.grad, We.grad, rtol=1e-12)
    np.testing.assert_allclose(b.grad, be.grad, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(shape=array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5),
       data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_reduction_vjp_is_the_same_written_out_or_broadcast(shape, data, dtype):
    """A reduction's VJP writes a small gradient out and broadcasts a large one: both ways give
    the same values, shape and dtype (the threshold forced to each side)."""
    import unrollgraph.ops as ops

    ndim = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1) if ndim else st.none()))
    keepdims = data.draw(st.booleans())
    x = np.arange(1, int(np.prod(shape)) + 1, dtype=dtype).reshape(shape)
    y = x.sum(axis=axis, keepdims=keepdims)
    g = (np.arange(y.size, dtype=dtype) + 0.5).reshape(y.shape)
    vjp = get_op("sum").vjps[0]
    got = {}
    saved = ops._SMALL_EXPAND
    try:
        for limit in (0, 10**9):
            ops._SMALL_EXPAND = limit
            got[limit] = np.asarray(vjp(g, y, x, axis=axis, keepdims=keepdims))
    finally:
        ops._SMALL_EXPAND = saved
    small, large = got[10**9], got[0]
    assert small.shape == large.shape == x.shape
    assert small.dtype == large.dtype == x.dtype
    np.testing.assert_array_equal(small, large)
    # each element of x receives the gradient of the one sum it went into
    want = np.expand_dims(g, axis) if (axis is not None and not keepdims and ndim) else g
    np.testing.assert_array_equal(small, np.broadcast_to(want, x.shape))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_ignores_only_its_own_overflow_and_keeps_the_callers_settings(dtype):
    # exp(-x) overflows for x far below 0 (the limit 0 is the answer, no warning); every
    # other floating-point setting is the caller's, also when the caller changes them
    # between calls (the settings with overflow ignored are made once per caller's settings)
    sigmoid = get_op("sigmoid").forward
    x = np.array([[-1e4, -1.0, 0.0, 2.0, 1e4]], dtype=dtype)
    middle = x[:, 1:4]
    want = 1.0 / (1.0 + np.exp(-middle))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (an overflow reported would raise)
        got = sigmoid(x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got[:, 1:4], want)
        assert got[0, 0] == 0.0 and got[0, 4] == 1.0
        before = np.geterr()
        for _ in range(2):
            with np.errstate(under="raise"):  # exp(-1e4) underflows: the caller asked to know
                with pytest.raises(FloatingPointError, match="underflow"):
                    sigmoid(np.array([[1e4]], dtype=dtype))
            np.testing.assert_array_equal(sigmoid(x), got)  # (the default settings again)
        with np.errstate(over="raise"):  # the sigmoid's own overflow stays expected
            np.testing.assert_array_equal(sigmoid(x), got)
        assert np.geterr() == before
        with pytest.raises(RuntimeWarning, match="overflow"):
            np.exp(np.array([1e4], dtype=dtype))  # the setting outside it is untouched
