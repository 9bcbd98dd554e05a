"""ug.gradcheck given functions and arguments it cannot check: named errors saying what it got."""

import numpy as np
import pytest

import unrollgraph as ug


def test_a_function_returning_a_float_is_named():
    """gradcheck(lambda x: 3.0, ...) used to end in AttributeError."""
    with pytest.raises(ug.GradcheckError) as info:
        ug.gradcheck(lambda x: 3.0, [ug.tensor([1.0, 2.0])])
    text = str(info.value)
    assert "must return a ug.Tensor" in text and "type float: 3.0" in text
    assert isinstance(info.value, ug.UnrollGraphError)


@pytest.mark.parametrize("result, kind", [
    (lambda x: x.data, "ndarray"),
    (lambda x: (x, x), "tuple"),
    (lambda x: [x], "list"),
    (lambda x: None, "NoneType"),
    (lambda x: x.sum().item(), "float"),
    (lambda x: "x", "str"),
])
def test_every_non_tensor_result_is_named(result, kind):
    with pytest.raises(ug.GradcheckError, match=f"returned an object of type {kind}"):
        ug.gradcheck(result, [ug.tensor([1.0, 2.0])])


def test_a_function_that_returns_a_tensor_only_sometimes_is_caught_when_perturbed():
    calls = []

    def fn(x):
        calls.append(1)
        return (x * x).sum() if len(calls) == 1 else float((x * x).sum().item())

    with pytest.raises(ug.GradcheckError, match="type float"):
        ug.gradcheck(fn, [ug.tensor([1.0])])


def test_a_result_recorded_under_no_grad_fails_with_a_hint():
    def fn(x):
        with ug.no_grad():
            return x * 2.0

    with pytest.raises(ug.GradcheckError, match="does not require grad") as info:
        ug.gradcheck(fn, [ug.tensor([1.0, 2.0])])
    assert "by central differences" in str(info.value)


def test_a_result_that_does_not_read_an_input_is_refused_not_passed():
    """Both gradients would be zero: nothing checked. The error names the input."""
    with pytest.raises(ug.GradcheckError, match=r"does not depend on inputs\[0\] \(x"):
        ug.gradcheck(lambda x: ug.tensor(3.0), [ug.tensor([1.0, 2.0], name="x")])
    a, b = ug.tensor([1.0], name="a"), ug.tensor([2.0], name="b")
    with pytest.raises(ug.GradcheckError, match=r"inputs\[1\] \(b"):
        ug.gradcheck(lambda x, y: x * x, [a, b])
    assert ug.gradcheck(lambda x, y: x * y, [a, b])


def test_a_float32_input_closed_over_is_refused():
    """The report's case: w is copied to float64; fn reads the original, so both gradients
    were zero and gradcheck returned True."""
    w = ug.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True, name="w")
    with pytest.raises(ug.GradcheckError, match=r"inputs\[0\] \(w.*float32 tensor.*copy"):
        ug.gradcheck(lambda a: (w * w * w).sum(), [w])
    assert ug.gradcheck(lambda a: (a * a * a).sum(), [w])  # reading the copy it is given


def test_a_float32_cell_closed_over_is_refused():
    cell = ug.nn.RNNCell(2, 3, seed=0, dtype=np.float32)
    net = ug.unroll(cell, 3)
    xs = np.random.default_rng(0).normal(size=(3, 1, 2)).astype(np.float32)
    params = list(cell.parameters().values())
    with pytest.raises(ug.GradcheckError, match=r"does not depend on inputs\[0\] "
                                                r"\(weight_ih.*float32"):
        ug.gradcheck(lambda *p: ug.mse_loss(net(xs)[0], np.zeros((3, 1, 3))), params)
    # a float64 cell's parameters are checked in place: the same call passes
    c64 = ug.nn.RNNCell(2, 3, seed=0)
    net64 = ug.unroll(c64, 3)
    assert ug.gradcheck(lambda *p: ug.mse_loss(net64(xs.astype(np.float64))[0],
                                               np.zeros((3, 1, 3))),
                        list(c64.parameters().values()))


@pytest.mark.parametrize("kw, words", [
    (dict(eps=0.0), "eps must be a positive number"),
    (dict(eps=-1e-6), "eps must be a positive number"),
    (dict(eps=None), "eps must be a positive number"),
    (dict(eps=float("nan")), "eps must be a positive number"),
    (dict(atol=-1.0), "atol must be a number >= 0"),
    (dict(rtol="1e-4"), "rtol must be a number >= 0"),
])
def test_bad_tolerances_are_named(kw, words):
    with pytest.raises(ug.GradcheckError, match=words):
        ug.gradcheck(lambda x: x * x, [ug.tensor([1.0])], **kw)


def test_bad_inputs_and_functions_are_named():
    with pytest.raises(ug.DTypeError, match="str"):
        ug.gradcheck(lambda x: x * x, ["a"])
    with pytest.raises(ug.DTypeError, match="complex"):
        ug.gradcheck(lambda x: x * x, [np.array([1 + 2j])])
    with pytest.raises(ug.GradcheckError, match="no inputs"):
        ug.gradcheck(lambda: ug.tensor(1.0), [])
    with pytest.raises(ug.GradcheckError, match="fn must be callable"):
        ug.gradcheck(3.0, [ug.tensor([1.0])])
