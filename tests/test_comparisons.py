"""Comparisons are graph nodes: a condition built from a cell's state or input is computed
again at every step and every call, on every execution path, and survives export."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug


def _sign_cell():
    c = ug.Cell("w")
    x = c.input("x", (2,))
    h = c.state("h", (2,))
    hn = ug.where(h > 0, h * 2.0, h * 0.0 - 1.0) + x
    c.feedback(h, hn)
    c.output("y", hn)
    return c


def _by_hand(xs, h0, T):
    h, out = h0, []
    for t in range(T):
        h = np.where(h > 0, h * 2.0, h * 0.0 - 1.0) + xs[t]
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("keep", ["needed", "all"])
@pytest.mark.parametrize("anomaly", [False, True])
def test_a_condition_on_the_state_is_computed_at_every_step(keep, anomaly):
    """The exact cell of the report: [0, -6] at every step, not a mask frozen at build time."""
    xs = np.array([[[1.0, -5.0]]] * 3)
    net = ug.unroll(_sign_cell(), 3, keep=keep)
    if anomaly:  # the generic node-by-node loop
        with ug.detect_anomaly():
            y, _ = net(xs)
    else:
        y, _ = net(xs)
    np.testing.assert_array_equal(y.data[:, 0], [[0.0, -6.0]] * 3)
    np.testing.assert_array_equal(y.data, _by_hand(xs, np.zeros((1, 2)), 3))


@pytest.mark.parametrize("op", ["gt", "ge", "lt", "le"])
def test_every_comparison_on_an_input_follows_each_call(op):
    c = ug.Cell("cmp")
    x = c.input("x", (3,))
    h = c.state("h", (3,))
    w = c.param("w", np.array([0.5, -1.0, 2.0]))
    cond = {"gt": x > 0.5, "ge": x >= 0.5, "lt": x < 0.5, "le": x <= 0.5}[op]
    hn = ug.tanh(ug.where(cond, x * w, h * w) + h)
    c.feedback(h, hn)
    c.output("y", hn)
    rng = np.random.default_rng(0)
    fn = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal}[op]
    for truncate in (None, 2):
        net = ug.unroll(c, 4, truncate=truncate)
        for _call in range(2):  # a second call with other data: its own conditions
            xs = rng.uniform(-1, 1.5, (4, 2, 3))
            xs[0, 0, 0] = 0.5  # a tie
            y, _ = net(xs)
            hh, want = np.zeros((2, 3)), []
            for t in range(4):
                hh = np.tanh(np.where(fn(xs[t], 0.5), xs[t] * w.data, hh * w.data) + hh)
                want.append(hh)
            np.testing.assert_allclose(y.data, np.stack(want), rtol=1e-12)
    # and the gradient, through the picked branches, against finite differences
    xs = rng.uniform(-1, 1.5, (4, 2, 3))
    net = ug.unroll(c, 4)
    assert ug.gradcheck(lambda w_: (net(xs)[0] ** 2).sum(), [c.parameters()["w"]])


def test_a_masked_run_recomputes_conditions_per_sequence():
    net = ug.unroll(_sign_cell(), 3, masked=True)
    xs = np.array([[[1.0, -5.0], [2.0, 1.0]]] * 3)
    y, h = net(xs, lengths=[3, 2])
    for b, n in enumerate([3, 2]):
        alone = _by_hand(xs[:n, b:b + 1], np.zeros((1, 2)), n)
        np.testing.assert_array_equal(y.data[:n, b], alone[:, 0])
        np.testing.assert_array_equal(h.data[b], alone[-1, 0])


def test_comparison_values_dtypes_and_no_gradient():
    a = ug.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for t, want in ((a > 2, [0, 0, 1]), (a >= 2, [0, 1, 1]), (a < 2, [1, 0, 0]),
                    (a <= 2, [1, 1, 0]), (2 < a, [0, 0, 1]), (a > a, [0, 0, 0])):
        assert t.dtype == np.float64 and not t.requires_grad
        np.testing.assert_array_equal(t.data, want)
        assert t.node.op in ("gt", "ge", "lt", "le")
    a32 = ug.tensor([1.0, -1.0], dtype=np.float32)
    assert (a32 > 0).dtype == np.float32
    # the gradient flows through where's branches, never through the condition
    y = ug.where(a > 2, a * a, -a).sum()
    y.backward()
    np.testing.assert_array_equal(a.grad, [-1.0, -1.0, 6.0])


def test_truth_value_and_numpy_interop_of_a_comparison():
    t = ug.tensor(2.0)
    assert bool(t > 0) and not bool(t < 0)
    hit = False
    if t > 0:
        hit = True
    assert hit
    with ug.no_grad():
        assert bool(t > 0)
    np.testing.assert_array_equal(np.asarray(ug.tensor([1.0, -1.0]) > 0), [1.0, 0.0])
    with pytest.raises(TypeError, match="ambiguous"):
        bool(ug.tensor([1.0, -1.0]) > 0)
    with pytest.raises(TypeError, match="ambiguous"):
        bool(t)  # a tensor that is not a condition keeps no truth value


def test_a_python_if_or_len_on_a_cell_placeholder_is_refused():
    c = ug.Cell("c")
    x = c.input("x", (2,))
    h = c.state("h", (2,))
    with pytest.raises(ug.CellError, match="state h.*ug.where"):
        if (h * 2.0).sum() > 0:
            pass
    with pytest.raises(ug.CellError, match="len\\(x\\).*batch of one"):
        len(x)
    with pytest.raises(ug.CellError, match="input x"):
        len(x * 2.0)
    assert len(ug.tensor([[1.0, 2.0]])) == 1  # an ordinary tensor of one row has a length


def test_comparisons_survive_the_networkx_round_trip_and_draw():
    x = ug.tensor([1.0, -2.0], requires_grad=True, name="x")
    y = ug.where(x > 0, x, x * 0.1, name="y")
    g = ug.from_networkx(ug.to_networkx(y))
    assert [n.op for n in g.nodes].count("gt") == 1
    assert "gt" in ug.to_dot(y)
    net = ug.unroll(_sign_cell(), 2)
    net(np.ones((2, 1, 2)))
    ops = {d.get("op") for _, d in ug.to_networkx(net.last_run).nodes(data=True)}
    assert "gt" in ops
