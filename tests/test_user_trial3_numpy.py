"""The NumpyFunctionError names numpy's function by its public name (``np.linalg.norm``),
every suggestion it makes computes what numpy's function computes, and numpy's functions
compute on any tensor no gradient flows through (``np.where(c > 0, c, 0)``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph import interop

# suggestions that rearrange or combine (their arguments are not x, a, b alone): checked by
# the existing tests of ug's functions, not evaluated here
STRUCTURAL = {"reshape", "transpose", "concatenate", "concat", "stack", "squeeze",
              "expand_dims", "swapaxes", "moveaxis", "hstack", "vstack", "clip", "where",
              "copy", "positive", "softmax", "log_softmax", "expit", "average", "amax", "max",
              "sum", "mean"}


def _numpy_function(key):
    obj = np
    for part in key.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _evaluable():
    out = []
    for key, text in sorted(interop.COUNTERPARTS.items()):
        if key in STRUCTURAL or _numpy_function(key) is None:
            continue
        out.append((key, text))
    return out


@pytest.mark.parametrize("key,text", _evaluable())
def test_every_suggestion_computes_what_numpys_function_computes(key, text):
    rng = np.random.default_rng(0)
    a_val, b_val = rng.uniform(0.5, 2.0, (2, 3)), rng.uniform(0.5, 2.0, (2, 3))
    if key in ("dot", "matmul"):
        b_val = b_val.T.copy()
    expr = re.split(r" \((?:or|x > 0|weighted|a and b) ", text)[0]  # the first form written
    expr = expr.replace("axis=...", "axis=-1")
    env = {"ug": ug, "np": np, "x": ug.tensor(a_val, requires_grad=True),
           "a": ug.tensor(a_val, requires_grad=True), "b": ug.tensor(b_val)}
    got = eval(expr, env)  # noqa: S307 (the suggestion, as the user would type it)
    fn = _numpy_function(key)
    two = "a" in re.findall(r"\b[ab]\b", expr) and "b" in re.findall(r"\b[ab]\b", expr)
    kwargs = {"axis": -1} if "axis=-1" in expr and key != "linalg.norm" else {}
    if key == "linalg.norm":
        kwargs = {"axis": -1}
    if key == "heaviside":
        want = fn(a_val, 0.0)
    else:
        want = fn(a_val, b_val) if two else fn(a_val, **kwargs)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
    if key not in ("greater", "greater_equal", "less", "less_equal", "heaviside"):
        assert got.requires_grad  # a node a gradient flows through (comparisons: none)


@pytest.mark.parametrize("call,shown,advice", [
    (lambda t: np.linalg.norm(t), "np.linalg.norm", "ug.sqrt(ug.sum(x * x"),
    (lambda t: np.square(t), "np.square", "x * x"),
    (lambda t: np.fft.fft(t), "np.fft.fft", "no counterpart of np.fft.fft"),
    (lambda t: np.std(t), "np.std", "ug.sqrt(ug.mean("),
    (lambda t: np.min(t), "np.min", "-ug.max(-x"),
    (lambda t: np.log1p(t), "np.log1p", "ug.log(1 + x)"),
])
def test_the_error_names_numpys_public_function_and_the_ug_expression(call, shown, advice):
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    with pytest.raises(ug.NumpyFunctionError) as err:
        call(w)
    msg = str(err.value)
    assert msg.startswith(shown + "(") and advice in msg and err.value.function == shown


def test_public_names_of_numpy_functions():
    assert interop.public_name(np.linalg.norm) == "np.linalg.norm"
    assert interop.public_name(np.sum) == "np.sum"
    assert interop.public_name(np.add) == "np.add"
    assert interop.public_name(np.fft.rfft) == "np.fft.rfft"


@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.floats(-5, 5), min_size=1, max_size=6),
       fn=st.sampled_from(["where", "sum", "linalg.norm", "stack", "clip"]))
def test_numpy_functions_compute_on_tensors_no_gradient_flows_through(values, fn):
    arr = np.array(values)
    c = ug.tensor(arr, name="c")
    calls = {"where": lambda t, m: np.where(m, t, 0.0), "sum": lambda t, m: np.sum(t * m),
             "linalg.norm": lambda t, m: np.linalg.norm(t * m),
             "stack": lambda t, m: np.stack([t, m]), "clip": lambda t, m: np.clip(t, -1, m)}
    got = calls[fn](c, c > 0)  # c > 0 and c * (c > 0) are computed from constants only
    want = calls[fn](arr, (arr > 0).astype(float))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(arr, values)  # nothing changed
    w = ug.tensor(arr, requires_grad=True, name="w")
    with pytest.raises(ug.NumpyFunctionError, match="requires grad"):
        calls[fn](w, w > 0)


def test_inside_a_cell_a_value_computed_from_a_placeholder_still_raises():
    c = ug.Cell("c")
    h = c.state("h", (3,))
    k = ug.tensor(np.ones(3))
    with pytest.raises(ug.NumpyFunctionError, match=r"np\.where.*computed from a cell's "
                       r"placeholder.*stand-in"):
        np.where(h > 0, k, 0.0)
    with pytest.raises(ug.NumpyFunctionError, match=r"np\.sum.*placeholder"):
        np.sum(h * 2)
