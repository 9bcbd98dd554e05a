"""What a user of cells gets wrong, and the message that says how to do it right: a loss
inside a cell, inputs and initial states of another float type than the cell's."""

from __future__ import annotations

import re

import numpy as np
import pytest

import unrollgraph as ug


def _elman(classes=3):
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state("h", (classes,))
    W = cell.param("W", np.full((classes, 2), 0.1))
    logits = ug.tanh(x @ W.T + h, name="logits")
    cell.feedback(h, logits)
    return cell, logits


LOSSES = {
    "cross_entropy": (lambda y: ug.cross_entropy(y, np.array([1])),
                      lambda T, B: np.ones((T, B), dtype=int)),
    "mse_loss": (lambda y: ug.mse_loss(y, np.zeros((1, 3))),
                 lambda T, B: np.zeros((T, B, 3))),
    "binary_cross_entropy_with_logits": (
        lambda y: ug.binary_cross_entropy_with_logits(y, np.zeros((1, 3))),
        lambda T, B: np.zeros((T, B, 3))),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("declared", [False, True])
def test_a_loss_inside_a_cell_says_it_belongs_on_the_outputs_and_how(loss, declared):
    make, targets = LOSSES[loss]
    cell, logits = _elman()
    if declared:
        cell.output("logits", logits)
    cell.output("loss", make(logits))
    with pytest.raises(ug.CellError) as info:
        ug.unroll(cell, steps=4)
    msg = str(info.value)
    assert f"(op {loss}) is a loss" in msg
    assert "A loss belongs outside the cell" in msg
    assert f"loss = ug.{loss}(" in msg
    # (the declaration to add is named only when the value is not an output yet)
    assert ("cell.output('logits', logits)" in msg) is not declared
    # what the message says to do works: the same cell with the loss on the net's outputs
    cell, logits = _elman()
    cell.output("logits", logits)
    net = ug.unroll(cell, steps=4)
    outputs, state = net(np.ones((4, 2, 2)))
    picked = re.search(r"ug\.\w+\((outputs(\[[^]]*\])?),", msg).group(1)
    assert picked == "outputs"  # one output: the net returns it as a tensor
    value = getattr(ug, loss)(outputs, targets(4, 2))
    value.backward()
    assert cell.parameters()["W"].grad.shape == (3, 2)


def test_a_mean_over_every_axis_in_a_cell_points_at_losses_too():
    cell, logits = _elman()
    cell.output("y", logits)
    cell.output("penalty", (logits * logits).mean())
    with pytest.raises(ug.CellError, match=r"mixes the sequences of a batch.*if it computes a "
                                           r"loss, apply the loss outside the cell"):
        ug.unroll(cell, steps=2)


# -- the cell's float type --------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _custom32():
    cell = ug.Cell("custom")
    x = cell.input("x", (3,))
    h = cell.state("h", (4,))
    W = cell.param("W", np.full((4, 3), 0.1, dtype=np.float32))
    U = cell.param("U", np.eye(4, dtype=np.float32) * 0.5)
    h_next = ug.tanh(x @ W.T + h @ U.T + 0.25, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


CELLS32 = {
    "RNNCell": lambda: ug.nn.RNNCell(3, 4, seed=0, dtype=np.float32),
    "LSTMCell": lambda: ug.nn.LSTMCell(3, 4, seed=0, dtype=np.float32),
    "GRUCell": lambda: ug.nn.GRUCell(3, 4, seed=0, dtype=np.float32),
    "LSTM": lambda: ug.nn.LSTM(3, 4, num_layers=2, seed=0, dtype=np.float32),
    "custom": _custom32,
}
NETS = {"plain": {}, "checkpointed": {"checkpoint": 2}, "truncated": {"truncate": 2},
        "kept": {"keep": "all"}}


def _finals(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("kind", sorted(CELLS32))
@pytest.mark.parametrize("how", sorted(NETS))
def test_a_float64_input_or_state_to_a_float32_cell_is_refused_by_name(kind, how):
    cell = CELLS32[kind]()
    assert cell.dtype == np.float32
    net = ug.unroll(cell, steps=4, **NETS[how])
    x64 = np.random.default_rng(0).normal(size=(4, 2, 3))
    for xs in (x64, ug.tensor(x64), ug.tensor(x64, requires_grad=True)):
        with pytest.raises(ug.DTypeError, match=r"input 'x' is float64 but the cell computes in "
                                                r"float32.*xs\.astype\(np\.float32\)"):
            net(xs)
    with pytest.raises(ug.DTypeError, match="input 'x' is float64"):
        net(x64, lengths=[4, 2])  # a masked run too
    states = {k: np.zeros((2,) + t.shape[1:]) for k, t in cell.states.items()}
    first = next(iter(states))
    with pytest.raises(ug.DTypeError, match=rf"initial state '{first}' is float64 .*"
                                            r"h0\.astype\(np\.float32\)"):
        net(x64.astype(np.float32), state=states)
    # what the message says to do works, and everything stays float32
    x = ug.tensor(x64.astype(np.float32), requires_grad=True)
    out, state = net(x, state={k: v.astype(np.float32) for k, v in states.items()})
    assert out.dtype == np.float32 and all(s.dtype == np.float32 for s in _finals(state))
    (out.sum() + sum(s.sum() for s in _finals(state))).backward()
    assert x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in cell.parameters().values())


@pytest.mark.parametrize("kind", sorted(CELLS32))
def test_numbers_lists_and_integers_take_the_cell_s_float_type(kind):
    cell = CELLS32[kind]()
    net = ug.unroll(cell, steps=3)
    for xs in (np.ones((3, 2, 3), dtype=int), np.ones((3, 2, 3)).tolist(),
               np.ones((3, 2, 3), dtype=np.float16)):
        out, state = net(xs)
        assert out.dtype == np.float32 and all(s.dtype == np.float32 for s in _finals(state))
    if len(cell.states) == 1:  # one state: nested lists of numbers are that state
        out, state = net(np.ones((3, 2, 3), np.float32), state=[[0] * 4, [1] * 4])
        assert state.dtype == np.float32


def test_a_float32_cell_without_inputs_runs_in_float32():
    cell = ug.Cell("free")
    h = cell.state("h", (2,), init=[0.5, -0.5])
    W = cell.param("W", np.eye(2, dtype=np.float32))
    h_next = ug.tanh(h @ W.T, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    out, h_T = ug.unroll(cell, steps=3)()
    assert out.dtype == np.float32 and h_T.dtype == np.float32


def test_an_array_constant_in_float64_makes_the_cell_float64():
    """The cell's type is its parameters' and array constants' together: a float64 constant
    already computes the run in float64, so float64 inputs change nothing and are taken."""
    cell = ug.Cell("mixed")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.eye(2, dtype=np.float32))
    h_next = ug.tanh(x @ W.T + h * ug.tensor([0.5, 0.25]), name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    assert cell.dtype == np.float64
    out, _ = ug.unroll(cell, steps=2)(np.ones((2, 1, 2)))
    assert out.dtype == np.float64


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["RNNCell", "LSTMCell", "GRUCell"]),
       cell_t=st.sampled_from([np.float32, np.float64]),
       x_t=st.sampled_from([np.float16, np.float32, np.float64, np.int64, "list"]),
       s_t=st.sampled_from([None, np.float32, np.float64, np.int32]),
       checkpoint=st.sampled_from([None, 2]), masked=st.booleans())
def test_a_call_returns_the_cell_s_type_or_refuses(kind, cell_t, x_t, s_t, checkpoint, masked):
    """Whatever the types of the inputs and initial states, a call either returns outputs and
    final states of the cell's float type or raises DTypeError (a float64 input or state for a
    float32 cell): never a silently wider run."""
    cell = getattr(ug.nn, kind)(3, 4, seed=0, dtype=cell_t)
    net = ug.unroll(cell, steps=3, checkpoint=checkpoint)
    xs = np.random.default_rng(1).normal(size=(3, 2, 3))
    xs = xs.tolist() if x_t == "list" else xs.astype(x_t)
    state = None if s_t is None else {k: np.ones((2, 4), dtype=s_t) for k in cell.states}
    wide = cell_t == np.float32 and (x_t == np.float64 or s_t == np.float64)
    try:
        out, fin = net(xs, state=state, lengths=[3, 1] if masked else None)
    except ug.DTypeError as err:
        assert wide, err
        return
    assert not wide
    assert out.dtype == cell_t and all(s.dtype == cell_t for s in _finals(fin))


def test_training_helpers_keep_a_float32_cell_float32():
    cell = ug.nn.RNNCell(1, 4, seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 2, 1)).astype(np.float32)
    ys = rng.normal(size=(8, 2, 4)).astype(np.float32)
    opt = ug.optim.SGD(cell.parameters(), lr=0.1)
    _, (h,) = ug.train.tbptt(cell, xs.tolist(), ys, ug.mse_loss, k1=4, k2=4, optimizer=opt,
                             state=[[0] * 4] * 2)
    assert h.dtype == np.float32 and cell.weight_hh.dtype == np.float32
    with pytest.raises(ug.DTypeError, match="input 'x' is float64"):
        ug.train.tbptt(cell, xs.astype(np.float64), ys, ug.mse_loss, k1=4, k2=4)
    head = ug.train.Linear(4, 1, seed=0, dtype=np.float32)
    model = ug.train.SequenceModel(ug.unroll(cell, 8), head, last=True)
    assert model(xs).dtype == np.float32
    assert head([[1, 2, 3, 4]]).dtype == np.float32  # numbers take the layer's type
    with pytest.raises(ug.DTypeError, match=r"Linear: the input is float64 .*x\.astype"):
        head(np.ones((2, 4)))
    hist = ug.train.fit(model, ug.optim.Adam(model.parameters()),
                        [(xs, np.zeros((2, 1), np.float32))], epochs=2, progress=False)
    assert len(hist.epoch_loss) == 2
    assert all(p.dtype == np.float32 for p in model.parameters().values())


def test_float32_inputs_to_a_float64_cell_are_widened_to_the_cell_s_type():
    cell = ug.nn.GRUCell(3, 4, seed=0)
    out, h = ug.unroll(cell, steps=2)(np.ones((2, 1, 3), dtype=np.float32))
    assert out.dtype == np.float64 and h.dtype == np.float64
