"""No call of the public API changes an array the user passed, or its flags.

Every array given to the library (inputs, initial states, lengths, parameters, targets and
labels, seeds, assigned values, optimizer and training data) is drawn in every layout a user
may have: C or Fortran order, a strided view, read-only or writable, float32, float64 or
integer. After the call, each array holds the same bytes and the same ``writeable`` flag, and
editing it afterwards changes nothing the library keeps.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug


@st.composite
def user_array(draw, shape, kinds=("f8", "f4", "i8")):
    """An array of ``shape`` as a user may hold it: any order, a view, maybe read-only."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(kinds))
    layout = draw(st.sampled_from(["c", "f", "strided", "transposed"]))
    if layout == "strided":  # every other element of a bigger array: not contiguous
        big = rng.normal(size=tuple(2 * s for s in shape))
        arr = big[tuple(slice(None, None, 2) for _ in shape)]
    elif layout == "transposed":
        arr = rng.normal(size=shape[::-1]).T
    else:
        arr = np.asarray(rng.normal(size=shape), order=layout.upper())
    if kind == "i8":
        arr = np.round(arr * 2)
    arr = arr.astype(kind, copy=False) if layout in ("strided", "transposed") else \
        np.asarray(arr, dtype=kind, order=layout.upper())
    if draw(st.booleans()):
        arr.flags.writeable = False
    return arr


def _snapshot(arrays):
    return [(a, a.copy(), a.flags.writeable, a.dtype, a.strides) for a in arrays]


def _unchanged(snap):
    for a, before, writeable, dtype, strides in snap:
        assert a.dtype == dtype and a.strides == strides
        assert a.flags.writeable == writeable, "the library changed an array's writeable flag"
        np.testing.assert_array_equal(a, before, err_msg="the library changed a user's array")


T, B, D, H = 3, 2, 2, 3
CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


@settings(max_examples=25, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(CELLS)),
       options=st.sampled_from([{}, {"checkpoint": 2}, {"truncate": 2}, {"keep": "all"}]))
def test_a_net_call_and_backward_change_no_user_array(data, kind, options):
    cell = CELLS[kind](D, H, seed=0)
    net = ug.unroll(cell, steps=T, **options)
    xs = data.draw(user_array((T, B, D)), label="xs")
    states = {k: data.draw(user_array((B, H)), label=k) for k in cell.states}
    lengths = data.draw(st.sampled_from([None, np.array([T, 1]), [2, T]]), label="lengths")
    seed = data.draw(user_array((T, B, H)), label="seed")
    user = [xs, seed, *states.values()] + ([lengths] if isinstance(lengths, np.ndarray) else [])
    snap = _snapshot(user)
    out, fin = net(xs, state=states, lengths=lengths)
    out.backward(gradient=seed)
    _unchanged(snap)
    # and the run kept copies: editing the arrays now changes nothing it holds
    run = net.last_run
    rnet = run.net  # (a masked twin of net for a call with lengths)
    nodes = [rnet.input_nodes["x"][0], *rnet.init_nodes.values()]
    first = [np.array(run.value(n), copy=True) for n in nodes]
    for a in user:
        if a.flags.writeable and a.dtype.kind == "f":
            a[...] = 99.0
    for n, before in zip(nodes, first):
        np.testing.assert_array_equal(run.value(n), before)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_tensors_parameters_and_assignments_change_no_user_array(data):
    w = data.draw(user_array((H, D)), label="w")
    g = data.draw(user_array((H, D)), label="g")
    new = data.draw(user_array((H, D)), label="new")
    row = data.draw(user_array((D,)), label="row")
    snap = _snapshot([w, g, new, row])
    t = ug.tensor(w, requires_grad=True)
    cell = ug.Cell("c")
    p = cell.param("W", w)
    cell.state("h", (H,), init=data.draw(user_array((H,)), label="init"))
    (t * 2.0).backward(gradient=g)
    t.grad = g
    t.data = new
    p[0] = row
    with p.edit() as a:
        a *= 2.0
    cell.load_state_dict({"W": new})
    ug.optim.SGD([t], lr=0.1, momentum=0.9).step()
    ug.optim.Adam([t], lr=0.1).step()
    ug.clip_grad_norm([t], 0.5)
    _unchanged(snap)


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_losses_and_training_helpers_change_no_user_array(data):
    pred = data.draw(user_array((B, H)), label="pred")
    target = data.draw(user_array((B, H)), label="target")
    labels = data.draw(user_array((B,), kinds=("i8",)), label="labels") % H
    xs = data.draw(user_array((4, B, 1), kinds=("f8", "i8")), label="xs")
    ys = data.draw(user_array((4, B, H), kinds=("f8", "i8")), label="ys")
    h0 = data.draw(user_array((B, H)), label="h0")
    snap = _snapshot([pred, target, labels, xs, ys, h0])
    logits = ug.tensor(pred, requires_grad=True)
    (ug.mse_loss(logits, target) + ug.cross_entropy(logits, labels)
     + ug.binary_cross_entropy_with_logits(logits, np.clip(np.abs(target), 0, 1))).backward()
    cell = ug.nn.RNNCell(1, H, seed=0)
    opt = ug.optim.SGD(cell.parameters(), lr=0.01)
    ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=2, k2=3, optimizer=opt, state=h0,
                   progress=False)
    model = ug.train.SequenceModel(ug.unroll(cell, 4))
    ug.train.fit(model, opt, [(xs, ys)], progress=False)
    ug.train.evaluate(model, [(xs, ys)])
    _unchanged(snap)
