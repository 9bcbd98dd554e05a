"""Bad arguments to the training loops, gradcheck, the flow tables and where: each is a named
ug error that names the argument and says what to pass (never a bare Python error)."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug


@pytest.fixture
def rnn():
    cell = ug.nn.RNNCell(1, 4, seed=0)
    return cell, np.zeros((6, 2, 1)), np.zeros((6, 2, 4))


def test_fit_and_evaluate_refuse_batches_that_are_not_pairs(rnn):
    cell, X, Y = rnn
    model = ug.unroll(cell, 6)
    opt = ug.optim.SGD(cell.parameters(), lr=0.1)
    for bad in (None, 3, "xy", {"x": X}):
        with pytest.raises(ug.TrainingError, match="fit: batches must be a list"):
            ug.train.fit(model, opt, bad, ug.mse_loss, progress=False)
        with pytest.raises(ug.TrainingError, match="evaluate: batches must be a list"):
            ug.train.evaluate(model, bad)


@pytest.mark.parametrize("kwargs, words", [
    (dict(xs=None), "xs must be an array of shape"),
    (dict(targets=None), "targets must be an array of shape"),
    (dict(xs="X"), "xs must be an array.*got str"),
    (dict(xs=1.0), "time axis"),
    (dict(xs={}), "empty dict"),
    (dict(cell="rnn"), "cell must be a ug.Cell.*got str"),
    (dict(optimizer="adam"), "optimizer must be an optimizer.*'adam'"),
    (dict(readout="lin"), "readout must be callable.*'lin'"),
    (dict(cache="x"), "cache must be a dict"),
    (dict(state={"c": np.zeros((2, 4))}), "state names.*partial dict"),
    (dict(state=(np.zeros((2, 4)), np.zeros((2, 4)))), "2 entries"),
    (dict(state={"h": np.array(["a", "b"])}), "tbptt\\(state=...\\) for state 'h'"),
])
def test_tbptt_names_each_bad_argument(rnn, kwargs, words):
    cell, X, Y = rnn
    args = dict(cell=cell, xs=X, targets=Y, loss_fn=ug.mse_loss, k1=2, k2=2, progress=False)
    args.update(kwargs)
    with pytest.raises(ug.UnrollGraphError, match=words):
        ug.train.tbptt(**args)


def test_tbptt_takes_the_state_as_a_dict_by_name_like_a_net_call(rnn):
    cell, X, Y = rnn
    h0 = np.full((2, 4), 0.3)
    a, (ha,) = ug.train.tbptt(cell, X, Y, ug.mse_loss, 2, 2, state={"h": h0}, progress=False)
    b, (hb,) = ug.train.tbptt(cell, X, Y, ug.mse_loss, 2, 2, state=h0, progress=False)
    assert a == b
    np.testing.assert_array_equal(ha, hb)
    net = ug.unroll(cell, 6)
    _, h = net(X, state={"h": h0})
    np.testing.assert_allclose(ha, h.data, rtol=1e-12)


def test_gradcheck_refuses_inputs_that_are_not_a_list():
    for bad in (None, "x", 3, {"x": 1.0}):
        with pytest.raises(ug.GradcheckError, match="inputs must be a list"):
            ug.gradcheck(lambda x: x * x, bad)


def test_flow_tables_and_compare_flows_name_bad_arguments():
    net = ug.unroll(ug.nn.RNNCell(1, 3, seed=0), 5)
    out, _ = net(np.ones((5, 1, 1)))
    out.sum().backward()
    flow = ug.gradient_flow(net.last_run)
    for bad in (-1, 0, "x", 2.5, True):
        with pytest.raises(ug.UnrollGraphError, match="max_rows.*positive int"):
            flow.table(max_rows=bad)
        with pytest.raises(ug.UnrollGraphError, match="max_rows.*positive int"):
            flow.to_markdown(max_rows=bad)
    rows = [line for line in flow.table(max_rows=2).splitlines() if line[:1].isdigit()]
    assert [line.split()[0] for line in rows] == ["0", "4"]  # first and last step
    for bad in (None, 3, "run"):
        with pytest.raises(ug.UnrollGraphError, match="compare_flows\\(\\): runs must be"):
            ug.compare_flows(bad)
    with pytest.raises(ug.UnrollGraphError, match="runs\\[1\\] is a int"):
        ug.compare_flows([net.last_run, 3])


@pytest.mark.parametrize("cond, words", [
    ("x", "str"), (None, "None"), (np.array([0.5, 0.0]), "0.5.*neither 0 nor 1"),
    ([2, 0], "neither 0 nor 1"),
])
def test_where_refuses_a_data_condition_that_is_not_a_mask(cond, words):
    a, b = ug.tensor([1.0, 2.0]), ug.tensor([3.0, 4.0])
    with pytest.raises(ug.DTypeError, match=words):
        ug.where(cond, a, b)


def test_where_takes_masks_as_data():
    a, b = ug.tensor([1.0, 2.0]), ug.tensor([3.0, 4.0])
    for cond in (np.array([True, False]), [1, 0], np.array([1.0, 0.0]), [True, False]):
        np.testing.assert_array_equal(ug.where(cond, a, b).data, [1.0, 4.0])
    np.testing.assert_array_equal(ug.where(True, a, b).data, [1.0, 2.0])
    # a tensor is read as true where nonzero, eager or in a cell alike
    np.testing.assert_array_equal(ug.where(ug.tensor([0.5, 0.0]), a, b).data, [1.0, 4.0])


def test_loose_flags_and_sizes_are_refused():
    cell = ug.nn.RNNCell(3, 4, seed=0)
    with pytest.raises(ug.CellError, match="steps must be a positive int, got True"):
        ug.unroll(cell, True)
    with pytest.raises(ug.CellError, match="truncate must be a positive int or None"):
        ug.unroll(cell, 3, truncate=True)
    with pytest.raises(ug.CellError, match="masked must be True or False"):
        ug.unroll(cell, 3, masked="yes")
    net = ug.unroll(cell, 5)
    with pytest.raises(ug.ShapeError, match="got a bool"):
        net(np.zeros((5, 2, 3)), lengths=[True, 5])
    with pytest.raises(ug.DTypeError, match="requires_grad"):
        ug.tensor(1.0, requires_grad="yes")
    with pytest.raises(ug.DTypeError, match="requires_grad_"):
        ug.tensor(1.0).requires_grad_("x")
    with pytest.raises(ug.CellError, match="bias must be True or False, got 'no'"):
        ug.nn.RNNCell(3, 4, bias="no")
    for kind in (ug.nn.GRUCell, ug.nn.LSTMCell):
        with pytest.raises(ug.CellError, match="bias must be True or False"):
            kind(3, 4, bias=0)
    assert "bias_hh" not in ug.nn.RNNCell(3, 4, bias=False).parameters()
    with pytest.raises(ug.TrainingError, match="last must be True"):
        ug.train.SequenceModel(net, last="yes")
    with pytest.raises(ug.TrainingError, match="readout must be callable"):
        ug.train.SequenceModel(net, readout="lin")
    a = ug.tensor([1.0, 2.0])
    for lo, hi in (("x", 1.0), (0.0, None and "y" or "y"), (True, 1.0)):
        with pytest.raises(ug.DTypeError, match="clip"):
            ug.clip(a, lo, hi)
        with pytest.raises(ug.DTypeError, match="clip"):
            a.clip(lo, hi)


def test_backward_after_no_grad_names_no_grad_as_the_cause():
    net = ug.unroll(ug.nn.RNNCell(1, 3, seed=0), 4)
    with ug.no_grad():
        y, _ = net(np.ones((4, 1, 1)))
    with pytest.raises(ug.GradientError, match="inside ug.no_grad\\(\\)"):
        (y * y).sum().backward()
    x = ug.tensor(1.0, requires_grad=True)
    with ug.no_grad():
        z = x * 2.0
    with pytest.raises(ug.GradientError, match="inside ug.no_grad\\(\\).*enable_grad"):
        z.backward()
    # a tensor that never required grad keeps the message about requires_grad=True
    with pytest.raises(ug.GradientError, match="requires_grad=True"):
        (ug.tensor(1.0) * 2.0).backward()


def test_assigning_requires_grad_takes_a_bool_only():
    t = ug.tensor([1.0])
    for bad in ("x", 1, None, "False"):
        with pytest.raises(ug.DTypeError, match="requires_grad = ...: pass True or False"):
            t.requires_grad = bad
    assert t.requires_grad is False
    t.requires_grad = True
    (t * t).sum().backward()
    np.testing.assert_array_equal(t.grad, [2.0])
