"""Every error is an UnrollGraphError whose message names the op, the nodes (by user name) and
the shapes involved, and suggests a fix."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph import ops
from unrollgraph.tensor import apply


def _t(shape, name, requires_grad=False):
    return ug.tensor(np.ones(shape), name=name, requires_grad=requires_grad)


def _message(fn, cls=ug.UnrollGraphError) -> str:
    with pytest.raises(cls) as info:
        fn()
    assert isinstance(info.value, ug.UnrollGraphError)
    return str(info.value)


def test_one_hierarchy():
    for cls in (ug.ShapeError, ug.GraphError, ug.CycleError, ug.CellError, ug.GradientError,
                ug.AnomalyError, ug.RenderError, ug.GradcheckError):
        assert issubclass(cls, ug.UnrollGraphError)
    assert issubclass(ug.ShapeError, ValueError) and issubclass(ug.CycleError, ug.GraphError)


def test_matmul_inner_size_mismatch_names_both_nodes_and_suggests_transpose():
    msg = _message(lambda: _t((2, 3), "x") @ _t((2, 3), "W"), ug.ShapeError)
    assert msg.startswith(
        "matmul: cannot multiply x (2, 3) by W (2, 3): inner sizes 3 and 2 differ"
    )
    assert "did you mean W.T?" in msg


def test_matmul_mismatch_without_a_transpose_fix():
    msg = _message(lambda: _t((2, 3), "x") @ _t((4, 5), "V"), ug.ShapeError)
    assert msg == "matmul: cannot multiply x (2, 3) by V (4, 5): inner sizes 3 and 4 differ"


def test_matmul_of_a_scalar_and_of_unbroadcastable_batches():
    msg = _message(lambda: _t((2, 3), "x") @ _t((), "s"), ug.ShapeError)
    assert "x (2, 3) by s ()" in msg and "use * for a scalar product" in msg
    msg = _message(lambda: _t((2, 2, 3), "A") @ _t((3, 3, 2), "B"), ug.ShapeError)
    assert "batch shapes (2,) and (3,) do not broadcast" in msg


def test_broadcast_mismatch_names_the_op_nodes_and_shapes():
    msg = _message(lambda: _t((2, 3), "x") + _t((4,), "b"), ug.ShapeError)
    assert msg.startswith("add: cannot broadcast x (2, 3) with b (4,)")
    assert "reshape" in msg
    msg = _message(lambda: ug.maximum(_t((2, 3), "x"), _t((2,), "m")), ug.ShapeError)
    assert msg.startswith("maximum: cannot broadcast x (2, 3) with m (2,)")


def test_shape_op_errors():
    x = _t((2, 3), "x")
    assert "cannot reshape x (2, 3) (6 elements) into (4, 2)" in _message(
        lambda: x.reshape(4, 2))
    assert "getitem: cannot index x (2, 3) with 5" in _message(lambda: x[5])
    msg = _message(lambda: ug.concat([x, _t((3, 2), "z")]))
    assert msg.startswith("concat along axis 0: cannot join x (2, 3), z (3, 2)")
    msg = _message(lambda: ug.stack([x, _t((3, 2), "z")]))
    assert msg == "stack: all inputs need the same shape, got x (2, 3), z (3, 2)"


def test_loss_errors():
    x = _t((2, 3), "logits")
    msg = _message(lambda: ug.mse_loss(x, ug.tensor(np.ones(3), name="y")))
    assert msg == ("mse_loss: prediction logits (2, 3) and target y (3,) must have the same "
                   "shape; reshape the target to (2, 3)")
    assert "need labels of shape (2,)" in _message(lambda: ug.cross_entropy(x, [0, 1, 2]))
    assert "must lie in [0, 2] for 3 classes; got values from 0 to 3" in _message(
        lambda: ug.cross_entropy(x, [0, 3]))
    assert "must be integer class indices" in _message(lambda: ug.cross_entropy(x, [0.5, 1]))
    msg = _message(lambda: ug.binary_cross_entropy_with_logits(x, np.ones((3, 2))))
    assert msg.startswith("binary_cross_entropy_with_logits: prediction logits (2, 3)")


def test_unknown_op_lists_known_ones_and_how_to_register():
    msg = _message(lambda: apply("gelu", _t((2,), "x")), ug.GraphError)
    assert "no op registered under 'gelu'" in msg and "tanh" in msg and "defop" in msg


def test_registering_an_op_twice_is_an_error():
    msg = _message(lambda: ops.defop("tanh", np.tanh, [None]), ug.GraphError)
    assert "'tanh' is already registered" in msg


def test_backward_of_a_non_scalar_says_what_to_pass():
    y = _t((2, 3), "w", requires_grad=True) * 2.0
    y.name = "y"
    msg = _message(y.backward, ug.GradientError)
    assert "non-scalar tensor y of shape (2, 3)" in msg
    assert "gradient=np.ones((2, 3))" in msg and "t.sum().backward()" in msg


def test_backward_without_requires_grad_and_with_a_wrong_seed():
    msg = _message(_t((2,), "x").sum().backward, ug.GradientError)
    assert "requires_grad=True" in msg
    w = _t((2,), "w", requires_grad=True)
    msg = _message(lambda: (w * 1.0).backward(np.ones(3)), ug.ShapeError)
    assert "seed gradient of shape (3,)" in msg and "(2,)" in msg


def test_item_of_a_non_scalar():
    assert "one-element tensor; w has shape (2, 3)" in _message(_t((2, 3), "w").item)


def test_gradcheck_reports_the_worst_element_its_input_and_both_numbers():
    # x * detach(x): backward sees only one factor, so it reports x where the truth is 2x
    with pytest.raises(ug.GradcheckError) as info:
        ug.gradcheck(lambda a: a * a.detach(), [ug.tensor([1.0, 3.0], name="a")])
    msg = str(info.value)
    # gradcheck reduces a vector output with a fixed random projection (seed 0)
    proj = np.random.default_rng(0).standard_normal(2)
    worst = int(np.argmax(np.abs(proj * [1.0, 3.0])))
    analytic, numeric = proj[worst] * [1.0, 3.0][worst], 2 * proj[worst] * [1.0, 3.0][worst]
    assert f"d(output)/d(a)[{worst}] is " in msg
    got_a = float(msg.split(" is ")[1].split(" by backward()")[0])
    got_n = float(msg.split(" but ")[1].split(" by central")[0])
    assert got_a == pytest.approx(analytic, rel=1e-9)
    assert got_n == pytest.approx(numeric, rel=1e-6)


def test_gradcheck_returns_true_on_a_correct_gradient():
    assert ug.gradcheck(lambda a: (a * a).sum(), [np.array([1.0, -2.0])]) is True


def test_a_vjp_of_the_wrong_shape_is_named():
    ops.defop("bad_vjp_test", lambda a: a * 2.0, [lambda g, ans, a: np.ones(a.size + 1)])
    try:
        x = _t((3,), "x", requires_grad=True)
        msg = _message(lambda: apply("bad_vjp_test", x).sum().backward(), ug.GraphError)
    finally:
        ops._REGISTRY.pop("bad_vjp_test")
    assert "op 'bad_vjp_test'" in msg and "input 0 (x, shape (3,))" in msg
    assert "shape (4,)" in msg


def test_anomaly_error_is_an_unrollgraph_error():
    with ug.detect_anomaly():
        msg = _message(lambda: ug.log(_t((2,), "x") * 0.0, name="y"), ug.AnomalyError)
    assert "forward of log (node 'y') produced Inf" in msg


def test_tensors_of_other_types_raise_a_dtype_error_that_says_what_to_pass():
    with pytest.raises(ug.DTypeError, match=r"dtype=int64.*float32 or float64.*dtype=np.float64"):
        ug.tensor([1, 2], dtype=int)
    with pytest.raises(ug.DTypeError, match="float16"):
        ug.tensor([1.0], dtype=np.float16)
    with pytest.raises(ug.DTypeError, match="str data.*pass numbers"):
        ug.tensor("abc")
    with pytest.raises(ug.DTypeError, match="complex"):
        ug.tensor([1j])
    with pytest.raises(TypeError):  # also a TypeError, as numpy users expect
        ug.tensor([1, 2], dtype=np.int32)
    assert ug.tensor([1, 2]).data.dtype == np.float64  # integers without dtype= convert
    assert ug.tensor(np.ones(2, np.float16)).data.dtype == np.float32


# -- one validation path for every entry point ------------------------------------------------

from decimal import Decimal  # noqa: E402
from fractions import Fraction  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_COMPLEX = st.complex_numbers(max_magnitude=10, allow_nan=False, allow_infinity=False)
_TEXT = st.text(max_size=4)
#: values that are not real numbers, of every kind a user may pass by mistake
BAD_VALUES = st.one_of(
    st.none(),
    _TEXT,
    st.binary(max_size=3),
    _COMPLEX,
    st.lists(_COMPLEX, min_size=1, max_size=3),
    st.lists(st.one_of(st.floats(-1, 1), st.text(min_size=1, max_size=2)), min_size=1,
             max_size=3).filter(lambda xs: any(isinstance(x, str) for x in xs)),
    st.lists(st.none(), min_size=1, max_size=2),
    st.just([[1.0, 2.0], [3.0]]),  # ragged
    st.builds(object),
    st.just(np.datetime64("2020-01-01")),
    st.just(np.array(["a", "b"])),
    st.just(np.array([1 + 2j, 3j])),
    st.just(Decimal("1.5")),
    st.just(Fraction(1, 2)),
)


def _door_cell():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    return cell, ug.unroll(cell, steps=2)


#: entry point -> (call with a bad value, the argument's name the message must contain)
DOORS = {
    "tensor": (lambda bad: ug.tensor(bad), "tensor(data)"),
    "param": (lambda bad: ug.Cell("c").param("W", bad), "cell.param('W', value)"),
    "init": (lambda bad: ug.Cell("c").state("h", (3,), init=bad), "init="),
    "load_state_dict": (
        lambda bad: _door_cell()[0].load_state_dict(
            dict(_door_cell()[0].state_dict(), weight_hh=bad)),
        "state_dict['weight_hh']"),
    "net(xs)": (lambda bad: _door_cell()[1](bad), "xs"),
    "net(xs dict)": (lambda bad: _door_cell()[1]({"x": bad}), "xs['x']"),
    "state=": (lambda bad: _door_cell()[1](np.ones((2, 1, 2)), state=bad), "state"),
    "backward(gradient=)": (
        lambda bad: (ug.tensor([1.0, 2.0], requires_grad=True) * 2.0).backward(gradient=bad),
        "backward(gradient=...)"),
    ".data =": (lambda bad: setattr(ug.tensor([1.0], name="t"), "data", bad), "t.data"),
    ".grad =": (lambda bad: setattr(ug.tensor([1.0], name="t"), "grad", bad), "t.grad"),
    "t + bad": (lambda bad: ug.tensor([1.0]) + bad, "add: the operand"),
    "bad * t": (lambda bad: bad * ug.tensor([1.0]), "mul: the operand"),
    "t ** bad": (lambda bad: ug.tensor([1.0]) ** bad, "pow: the operand"),
    "t > bad": (lambda bad: ug.tensor([1.0]) > bad, "comparison"),
    "gradcheck": (lambda bad: ug.gradcheck(lambda a: a * 2.0, [bad]), "gradcheck: inputs[0]"),
}
# None is the documented default of these (no gradient, zeros, the cell's init, a unit seed)
_ALLOWED = {d: (type(None),) for d in (".grad =", "init", "state=", "backward(gradient=)")}


@pytest.mark.parametrize("door", sorted(DOORS))
@given(bad=BAD_VALUES)
def test_every_entry_point_refuses_non_real_data_by_name(door, bad):
    call, argument = DOORS[door]
    if isinstance(bad, _ALLOWED.get(door, ())):
        return
    with pytest.raises(ug.UnrollGraphError) as info:
        call(bad)
    assert argument in str(info.value), f"{door}: {info.value}"


def test_the_issues_inputs_are_refused_by_name():
    t = ug.tensor([1.0, 2.0])
    with pytest.raises(ug.DTypeError, match="complex"):
        t + 1j
    with pytest.raises(ug.DTypeError, match=r"cell.param\('W', value\): got None"):
        ug.Cell("c").param("W", None)
    cell, net = _door_cell()
    with pytest.raises(ug.DTypeError, match=r"xs\['x'\].*complex"):
        net(np.ones((2, 1, 2)) + 0.5j)
    with pytest.raises(ug.DTypeError, match=r"state_dict\['bias_ih'\].*complex"):
        cell.load_state_dict(dict(cell.state_dict(), bias_ih=np.ones(3) * 1j))
    for door in ("net(xs)", "state=", "param", "init", "load_state_dict",
                 "backward(gradient=)"):
        with pytest.raises(ug.DTypeError, match="str"):
            DOORS[door][0]("abc")


SIZES = st.one_of(st.floats(allow_nan=True), st.booleans(), st.integers(max_value=0),
                  st.text(max_size=2), st.none(), st.just(np.float64(2.0)))


@given(size=SIZES)
def test_shape_sizes_are_positive_ints_never_truncated(size):
    for declare in (lambda c, s: c.input("x", s), lambda c, s: c.state("h", s)):
        for shape in ((size,), (2, size), size):
            with pytest.raises(ug.ShapeError, match="shape"):
                declare(ug.Cell("c"), shape)
    if not isinstance(size, int) or isinstance(size, bool):
        with pytest.raises(ug.ShapeError, match="reshape"):
            ug.tensor(np.ones(4)).reshape(size, 2)
        with pytest.raises(ug.ShapeError, match="reshape"):
            ug.reshape(ug.tensor(np.ones(4)), (2, size))


def test_a_fractional_input_size_is_refused():
    with pytest.raises(ug.ShapeError, match=r"cell.input\('x', shape\).*2.5"):
        ug.Cell("c").input("x", (2.5,))
    with pytest.raises(ug.CellError, match="input_size must be a positive int, got True"):
        ug.nn.RNNCell(True, 3)


def test_a_state_dict_must_name_every_state_and_nothing_else():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=2)
    xs = np.ones((2, 1, 2))
    h = np.zeros((1, 3))
    with pytest.raises(ug.CellError, match=r"missing \['c'\].*states are \['h', 'c'\]"):
        net(xs, state={"h": h})
    with pytest.raises(ug.CellError, match=r"unknown keys \['z'\]"):
        net(xs, state={"h": h, "c": h, "z": h})
    with pytest.raises(ug.CellError, match=r"has states \['h', 'c'\].*one ndarray"):
        net(xs, state=h)
    with pytest.raises(ug.CellError, match="1 values"):
        net(xs, state=(h,))
    out, (h1, c1) = net(xs, state={"c": h, "h": h})  # any order of the keys
    ref, (h2, c2) = net(xs, state=(h, h))
    np.testing.assert_array_equal(out.data, ref.data)


def test_class_labels_that_are_not_numbers_are_named():
    x = ug.tensor([[0.0, 0.0]])
    for bad in (["a"], [np.inf], [None]):
        with pytest.raises(ug.ShapeError, match="labels must be integer class indices"):
            ug.cross_entropy(x, bad)


# -- an unrolled net's outputs are named as the user knows them ------------------------------

@settings(max_examples=15, deadline=None)
@given(step=st.integers(0, 4), lstm=st.booleans(), pick=st.integers(0, 2))
def test_an_anomaly_names_a_nets_output_and_the_step_its_nan_came_from(step, lstm, pick):
    """A NaN reaching an op from a net's call (its forward run outside detect_anomaly) is
    named by the output's name (``y (all steps)``, ``final c``), as explain names it, and
    the message gives the first step at which the output held it; no internal op name
    (``<item>``) appears in it or in the other messages about such a tensor."""
    cell = ug.nn.LSTMCell(3, 4, seed=0) if lstm else ug.nn.RNNCell(3, 4, seed=0)
    net = ug.unroll(cell, steps=5)
    xs = np.ones((5, 2, 3))
    xs[step, 1, 0] = np.nan
    out, fin = net(xs)
    picked = [out] + (list(fin) if isinstance(fin, tuple) else [fin])
    t = picked[pick % len(picked)]
    k = pick % len(picked)
    states = list(cell.states)
    name = "y (all steps)" if k == 0 else f"final {states[k - 1]}"
    with pytest.raises(ug.AnomalyError) as err, ug.detect_anomaly():
        (t * t).sum().backward()
    msg = str(err.value)
    assert "<item>" not in msg and f"its inputs were {name} {t.shape}, {name} {t.shape}" in msg
    if k == 0:
        assert f"output 'y' of the net's call already held one at step {step}" in msg
    else:
        assert f"the final state {states[k - 1]!r} of the net's call already held one" in msg
    with pytest.raises(ug.UnrollGraphError) as err:
        t.backward()
    assert f"non-scalar tensor {name} of shape" in str(err.value)
    assert "<item>" not in str(err.value)


@pytest.mark.parametrize("through", ["input", "state", "computed"])
def test_cross_entropy_on_a_cells_placeholder_says_why_and_what_to_do(through):
    """Labels computed from a cell's input or state hold the build-time stand-in values: the
    error says so, and where to compute the loss, instead of blaming the user's values."""
    c = ug.Cell("c")
    x = c.input("x", (3,))
    lab = c.input("lab", ())
    h = c.state("h", (3,))
    hn = ug.tanh(x + h, name="h_next")
    c.feedback(h, hn)
    labels = {"input": lab, "state": ug.sum(h, axis=1),
              "computed": lab + 0.25}[through]
    with pytest.raises(ug.CellError) as err:
        ug.cross_entropy(hn, labels)
    msg = str(err.value)
    assert "stand-in value" in msg and "outside the cell" in msg, msg
    assert ("input lab" if through != "state" else "state h") in msg
    assert "fractional values" not in msg and "np.float64" not in msg
    # outside a cell the user's own bad labels are still refused as before
    with pytest.raises(ug.ShapeError, match="fractional values"):
        ug.cross_entropy(ug.tensor(np.zeros((2, 3))), ug.tensor(np.array([0.5, 1.0])))
