"""A net's outputs and final states are views of its run's memory: no edit reaches it.

The run reads that memory again after the call: its backward pass (the last state is the
``h_T`` of ``1 - h_T²``), ``Run.state_grads`` and ``Run.step_contributions``, and a
checkpointed run, whose returned outputs and states share rows. A tensor handed out by the
call is read-only, and so is its ``detach()``; the library's in-place paths (``t[...] = v``,
``t.edit()``, ``add_``, ``mul_``, ``zero_``) on a detached copy must
edit a copy of the memory, never the run's (as carrying a state to the next batch and
resetting a finished sequence does: ``state = h.detach(); state[1] = 0``).

Over cells, execution options and the edit's kind, target and time (before or after
``backward()``), a run whose handed-out values are edited must give, bit for bit, the outputs,
gradients, state gradients and step contributions of a twin run left alone, and the edited
tensor must hold the edit.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

T, B, D, H = 5, 3, 2, 3
CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
EDITS = ["setitem", "edit", "add_", "mul_", "zero_"]


def _edit(t, how):
    """Edit the leaf ``t`` in place the way ``how`` names; returns it and the value it must
    hold. (``+=`` is not among them: on a tensor that needs no gradient it rebinds the name to
    a new tensor, ``t = t + v``.)"""
    want = t.numpy().copy()
    if how == "setitem":
        t[1] = 0.0
        want[1] = 0.0
    elif how == "edit":
        with t.edit() as a:
            a[0] *= -2.0
        want[0] *= -2.0
    elif how == "add_":
        t.add_(1.5)
        want += 1.5
    elif how == "mul_":
        t.mul_(3.0)
        want *= 3.0
    elif how == "zero_":
        t.zero_()
        want[...] = 0.0
    return t, want


def _go(spec, edit):
    """One call and backward of a fresh net; with ``edit``, a handed-out value's detached
    copy is edited before or after the backward pass."""
    cell = CELLS[spec["cell"]](D, H, seed=3)
    net = ug.unroll(cell, steps=T, keep=spec["keep"], checkpoint=spec["checkpoint"],
                    truncate=spec["truncate"])
    xs = np.random.default_rng(7).standard_normal((T, B, D))
    kw = {"lengths": spec["lengths"]} if spec["lengths"] is not None else {}
    out, states = net(xs, **kw)
    states = states if isinstance(states, tuple) else (states,)
    handed = [out, *states]
    G = np.random.default_rng(8).standard_normal(out.shape)
    loss = (out * G).sum() + (states[0] * states[0]).sum()
    edited = None

    def do_edit():
        nonlocal edited
        edited = _edit(handed[spec["target"] % len(handed)].detach(), spec["how"])

    if edit and spec["when"] == "before":
        do_edit()
    loss.backward()
    if edit and spec["when"] == "after":
        do_edit()
    run = net.last_run
    sg = run.state_grads()
    sg = sg if isinstance(sg, dict) else {"h": sg}
    return {
        "loss": loss.item(),
        "handed": [t.numpy().copy() for t in handed],
        "grads": {k: p.grad.copy() for k, p in cell.named_parameters()},
        "state_grads": {k: np.array(v, copy=True) for k, v in sg.items()},
        "contrib": run.step_contributions("weight_hh").copy(),
        "edited": edited,
    }


specs = st.fixed_dictionaries({
    "cell": st.sampled_from(sorted(CELLS)),
    "keep": st.sampled_from(["needed", "all"]),
    "checkpoint": st.sampled_from([None, 2]),
    "truncate": st.sampled_from([None, 2]),
    "lengths": st.sampled_from([None, [5, 2, 4]]),
    "target": st.integers(0, 2),
    "how": st.sampled_from(EDITS),
    "when": st.sampled_from(["before", "after"]),
})


@settings(max_examples=60, deadline=None)
@given(specs)
def test_an_edit_of_a_handed_out_value_reaches_only_the_edited_tensor(spec):
    if spec["checkpoint"] is not None and spec["keep"] == "all":
        spec = {**spec, "keep": "needed"}
    alone, edited = _go(spec, False), _go(spec, True)
    target, want = edited["edited"]
    np.testing.assert_array_equal(target.numpy(), want)  # the edit is the tensor's
    assert edited["loss"] == alone["loss"]
    for a, b in zip(edited["handed"], alone["handed"]):
        np.testing.assert_array_equal(a, b)  # the run's own values are untouched
    for part in ("grads", "state_grads"):
        for k in alone[part]:
            np.testing.assert_array_equal(edited[part][k], alone[part][k], err_msg=f"{part} {k}")
    np.testing.assert_array_equal(edited["contrib"], alone["contrib"])


def test_resetting_a_carried_state_leaves_the_gradient_of_the_run_that_made_it():
    """The reported case: the loss reads only the outputs, the last state is carried on
    with a finished sequence's row reset; the RNN's weight_hh gradient reads h_T."""
    def go(reset):
        cell = ug.nn.RNNCell(4, 5, seed=1)
        net = ug.unroll(cell, steps=6)
        out, h = net(np.random.default_rng(0).standard_normal((6, 3, 4)))
        state = h.detach()
        if reset:
            state[1] = 0.0
            assert not state.numpy()[1].any() and h.numpy()[1].any()
        (out * out).sum().backward()
        return cell.weight_hh.grad.copy()

    np.testing.assert_array_equal(go(True), go(False))


def test_a_parameter_and_its_detached_copy_still_share_an_edit():
    """The copy is for lent memory only: a tensor owning its memory (a parameter) and its
    ``detach()`` keep sharing it, as in PyTorch."""
    cell = ug.nn.RNNCell(2, 3, seed=0)
    w = cell.weight_hh
    before = w.numpy().copy()
    w.detach().add_(1.0)
    np.testing.assert_array_equal(w.numpy(), before + 1.0)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(sorted(CELLS)), st.sampled_from([("needed", None), ("all", None),
                                                        ("needed", 2)]))
def test_run_value_and_grad_hand_out_read_only_arrays(kind, options):
    """``Run.value`` and ``Run.grad`` return the run's own arrays (or its recomputation's),
    which its later reads (``full()``, the diagrams, ``state_grads``) use again: read-only,
    so that an edit fails at once instead of changing what the run shows afterwards."""
    keep, checkpoint = options
    net = ug.unroll(CELLS[kind](D, H, seed=3), steps=T, keep=keep, checkpoint=checkpoint)
    out, _ = net(np.random.default_rng(7).standard_normal((T, B, D)))
    (out * out).sum().backward()
    run = net.last_run
    for name in ("h@1", "h@4", "y_2", "weight_hh"):
        for get in (run.value, run.grad):
            a = get(name)
            before = a.copy()
            with np.testing.assert_raises(ValueError):
                a[...] = 99.0
            np.testing.assert_array_equal(get(name), before)
