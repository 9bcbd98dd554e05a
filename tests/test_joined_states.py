"""An output that is a state, copied by the call into one array after the initial state.

At a small size the compiled steps compute each state into an array of its own and the call
copies the outputs into one read-only (T, B, ...) array. For an output that is a state (an
RNN's h) and a run that made its initial state itself, the copy starts with ``h_0``: the
states ``h_0 .. h_{T-1}`` that a shared weight's gradient reads (``W_hh``'s) are then rows
of that copy, and the backward pass reads them there instead of stacking them again. The
numbers must be the same bits as the stack's, on every cell, and the user's array must stay
read-only and the user's alone.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

diff = importlib.import_module("test_differential")
plain_test = importlib.import_module("test_plain_path")
run_module = importlib.import_module("unrollgraph.run")
schedule = importlib.import_module("unrollgraph.schedule")


def _no_leads(self):
    return [None] * len(self.net._output_slots)


def _grads(spec, values, T, xs, seeds_out, seeds_fin, keep, truncate, lengths, join,
           monkeypatch):
    """Every gradient, output and state gradient of one run on the batched path with no
    initial state given, the states joined after h_0 (``join``) or stacked in the flush."""
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 0)
    if not join:
        monkeypatch.setattr(run_module.Run, "_output_leads", _no_leads)
    cell = diff.build_cell(spec, values)
    net = ug.unroll(cell, steps=T, truncate=truncate, keep=keep)
    xts = {f"x{k}": ug.tensor(x, requires_grad=True) for k, x in enumerate(xs)}
    outs, fins = net(xts, lengths=lengths)
    diff._loss(outs, fins, spec, seeds_out, seeds_fin).backward()
    run = net.last_run
    if not join:
        assert run.joined_states == ()
    got = {f"{k}.grad": p.grad for k, p in cell.parameters().items()}
    got.update({f"x{k}.grad": x.grad for k, x in enumerate(xts.values())})
    got.update({f"output {k}": o.data for k, o in enumerate(
        diff._as_list(outs, len(spec["outputs"])))})
    got.update({f"state_grads h{k}": run.state_grads(f"h{k}") for k in range(len(spec["st"]))})
    return got, run


@settings(max_examples=15, deadline=None)
@given(spec=diff.cells(mixing=False), data=st.data())
def test_joined_states_give_the_stacked_states_bits(spec, data):
    case, _ = plain_test.draw_case(spec, data)
    args = case[:4] + case[5:]  # (no initial states given: they are the ones joined)
    with pytest.MonkeyPatch.context() as monkeypatch:
        joined, _run = _grads(*args, True, monkeypatch)
    with pytest.MonkeyPatch.context() as monkeypatch:
        stacked, _run = _grads(*args, False, monkeypatch)
    assert joined.keys() == stacked.keys()
    for k, want in stacked.items():
        got = joined[k]
        if want is None:
            assert got is None, k
        else:
            assert got.dtype == want.dtype, k
            np.testing.assert_array_equal(got, want, err_msg=k, strict=True)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_a_small_nets_states_are_not_stacked_again_and_its_output_is_the_users(kind,
                                                                           monkeypatch):
    T, B, H, D = 10, 1, 8, 4
    cell = getattr(ug.nn, kind)(D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    x = ug.tensor(np.random.default_rng(1).normal(size=(T, B, D)))
    G = ug.tensor(np.random.default_rng(2).normal(size=(T, B, H)))
    made = []
    real_stack = schedule.stack

    def counted(arrays, pool=None):
        made.append(len(arrays))
        return real_stack(arrays, pool)

    monkeypatch.setattr(schedule, "stack", counted)
    out, _ = net(x)
    run = net.last_run
    assert len(run.joined_states) == 1  # the output h, a state the run started at zeros
    joined, arrays = run.joined_states[0]
    assert joined.shape == (T + 1, B, H) and not joined.flags.writeable
    assert not out.data.flags.writeable and np.shares_memory(out.data, joined)
    np.testing.assert_array_equal(joined[0], np.zeros((B, H)))
    np.testing.assert_array_equal(joined[1:], out.data)
    with pytest.raises(ValueError):
        out.data[0, 0, 0] = 1.0
    (out * G).sum().backward()
    joined_made = list(made)
    grads = {k: p.grad.copy() for k, p in cell.parameters().items()}
    # the same step with the states stacked in the flush: one stack more (on the batched
    # path), the same bits
    monkeypatch.setattr(run_module.Run, "_output_leads", _no_leads)
    cell2 = getattr(ug.nn, kind)(D, H, seed=0)
    net2 = ug.unroll(cell2, steps=T)
    made.clear()
    out2, _ = net2(x)
    (out2 * G).sum().backward()
    assert net2.last_run.joined_states == ()
    if net2.last_run.plain:  # (each step adds into the weights' gradients: no stacks)
        assert made == joined_made == []
    else:
        assert len(made) == len(joined_made) + 1
    np.testing.assert_array_equal(out2.data, out.data, strict=True)
    for k, g in grads.items():
        np.testing.assert_array_equal(cell2.parameters()[k].grad, g, err_msg=k, strict=True)
    # a second call does not touch the first one's output
    before = out.data.copy()
    net(ug.tensor(np.random.default_rng(3).normal(size=(T, B, D))))
    np.testing.assert_array_equal(out.data, before, strict=True)


def test_a_given_initial_state_is_not_joined():
    T, B, H, D = 6, 2, 3, 2
    cell = ug.nn.RNNCell(D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    x = ug.tensor(np.random.default_rng(1).normal(size=(T, B, D)))
    h0 = np.random.default_rng(2).normal(size=(B, H))
    out, _ = net(x, state=(ug.tensor(h0),))
    assert net.last_run.joined_states == ()
    out.sum().backward()
    assert cell.parameters()["weight_hh"].grad is not None


def _nn_step(kind, T, B, H, D, keep, truncate, dtype, lengths, join, monkeypatch):
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 0)
    if not join:
        monkeypatch.setattr(run_module.Run, "_output_leads", _no_leads)
    cell = getattr(ug.nn, kind)(D, H, seed=0, dtype=dtype)
    net = ug.unroll(cell, steps=T, truncate=truncate, keep=keep)
    rng = np.random.default_rng(1)
    x = ug.tensor(rng.normal(size=(T, B, D)).astype(dtype), requires_grad=True)
    G = ug.tensor(rng.normal(size=(T, B, H)).astype(dtype))
    out, fin = net(x, lengths=lengths)
    (out * G).sum().backward()
    run = net.last_run
    if not join:
        assert run.joined_states == ()
    elif lengths is None and not run.generic_forward:  # (a masked net's h is no state)
        assert len(run.joined_states) == 1
    got = {k: p.grad for k, p in cell.parameters().items()}
    got.update({"x.grad": x.grad, "output": out.data, "state_grads": run.state_grads("h")})
    return got


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["RNNCell", "LSTMCell", "GRUCell"]), T=st.integers(1, 12),
       B=st.integers(1, 3), H=st.integers(1, 9), D=st.integers(1, 5),
       keep=st.sampled_from(["needed", "all"]), dtype=st.sampled_from([np.float64, np.float32]),
       data=st.data())
def test_the_library_cells_give_the_same_bits_joined_or_stacked(kind, T, B, H, D, keep, dtype,
                                                                data):
    truncate = data.draw(st.none() | st.integers(1, T + 1), label="truncate")
    lengths = (np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B),
                                  label="lengths"))
               if data.draw(st.booleans(), label="masked") else None)
    args = (kind, T, B, H, D, keep, truncate, dtype, lengths)
    with pytest.MonkeyPatch.context() as monkeypatch:
        joined = _nn_step(*args, True, monkeypatch)
    with pytest.MonkeyPatch.context() as monkeypatch:
        stacked = _nn_step(*args, False, monkeypatch)
    for k, want in stacked.items():
        got = joined[k]
        assert got.dtype == want.dtype, k
        np.testing.assert_array_equal(got, want, err_msg=k, strict=True)
