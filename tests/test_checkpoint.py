"""Gradient checkpointing through time (``unroll(..., checkpoint=k)``).

Random cells (the generator of tests/test_differential.py), random T, k, batch, lengths and
truncation: a checkpointed run returns what the plain run returns, and every gradient and
``Run`` accessor agrees with the reference executor (the generic node-by-node walk keeping
every value) to 1e-12 relative, and with the cell stepped by hand on eager tensors.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.tensor import apply

# the random cells may declare a state their graph never reads (a legitimate cell: it carries
# a value out as the final state); unroll tells a user so with a CellWarning, which these
# tests of the arithmetic do not check (tests/test_user_trial_cells.py does)
pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

diff = importlib.import_module("test_differential")

EXAMPLES = int(os.environ.get("UNROLLGRAPH_CHECKPOINT_EXAMPLES", "25"))
REFERENCE = ("all", "generic", False)  # the reference executor: the generic walk, all kept


def tight(got, want, what):
    """Equal to 1e-12 relative (to the largest magnitude of ``want``); None is zeros."""
    if want is None:
        assert got is None or not np.any(got), what
        return
    want = np.asarray(want)
    got = np.zeros_like(want) if got is None else np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    nan = np.isnan(want)
    if nan.any():  # NaN where the reference leaves it open (see reference_lengths)
        got, want = np.where(nan, 0.0, got), np.where(nan, 0.0, want)
    scale = max(1e-300, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale, err_msg=what)


def compare(spec, T, B, seed, k, truncate, lengths, monkeypatch):
    rng = np.random.default_rng(seed)
    values = diff._param_values(spec, seed)
    xs = [rng.uniform(-1, 1, (T, B, d)) for d in spec["in"]]
    h0s = [rng.uniform(-1, 1, (B, d)) for d in spec["st"]]
    cell = diff.build_cell(spec, values)
    widths = [cell.outputs[f"y{j}"].shape[1:] for j in range(len(spec["outputs"]))]
    seeds_out = [rng.standard_normal((T, B) + w) for w in widths]
    seeds_fin = [rng.standard_normal((B, d)) for d in spec["st"]]
    args = (cell, spec, T, xs, h0s, seeds_out, seeds_fin)
    want = diff.run_net(*args, REFERENCE, truncate, lengths, monkeypatch)
    for option in (("needed", "templates", True), ("needed", "generic", False)):
        got = diff.run_net(*args, option, truncate, lengths, monkeypatch, checkpoint=k)
        tag = f"checkpoint={k} {option}"
        for key in ("outs", "finals", "xs", "h0", "state_grads", "states", "out_nodes",
                    "state_node_grads"):
            for j, (a, b) in enumerate(zip(got[key], want[key])):
                tight(a, b, f"{tag} {key}[{j}]")
        for name, g in want["grads"].items():
            if g is None:
                assert got["grads"][name] is None, f"{tag}: unused {name}.grad is not None"
            else:
                tight(got["grads"][name], g, f"{tag} {name}.grad")
            tight(got["per_step"][name], want["per_step"][name],
                  f"{tag} step_contributions({name!r})")
        for s, (a, b) in enumerate(zip(got["values"], want["values"])):
            tight(a, b, f"{tag} Run.value of node {s}")
        for s, (a, b) in enumerate(zip(got["node_grads"], want["node_grads"])):
            if a is None or b is None:  # None where the reference walk has no gradient
                assert a is None and b is None, (tag, s, a, b)
            else:
                tight(a, b, f"{tag} Run.grad of node {s}")
        if option[1] == "generic":  # the same node-by-node arithmetic forward: the same bits
            for a, b in zip(got["outs"] + got["finals"], want["outs"] + want["finals"]):
                assert np.array_equal(a, b, equal_nan=True), tag
    # and the cell stepped by hand (each sequence alone at its own length)
    if lengths is None:
        ref = diff.reference(spec, values, xs, h0s, seeds_out, seeds_fin, truncate)
    else:
        ref = diff.reference_lengths(spec, values, xs, h0s, seeds_out, seeds_fin, lengths,
                                     truncate)
    diff.check_against(ref, got, spec, ("checkpoint", k), lengths is not None)


@settings(max_examples=EXAMPLES)
@given(spec=diff.cells(), data=st.data())
def test_checkpointed_runs_agree_with_the_reference_walk(spec, data, monkeypatch_module):
    T = data.draw(st.integers(2, 7), label="T")
    k = data.draw(st.integers(1, T - 1) | st.just("sqrt"), label="k")
    B = data.draw(st.integers(1, 3), label="B")
    truncate = data.draw(st.none() | st.integers(1, T + 1), label="truncate")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    compare(spec, T, B, seed, k, truncate, None, monkeypatch_module)


@settings(max_examples=EXAMPLES)
@given(spec=diff.cells(mixing=False), data=st.data())
def test_checkpointed_runs_with_lengths_agree_with_the_reference_walk(spec, data,
                                                                      monkeypatch_module):
    T = data.draw(st.integers(2, 7), label="T")
    k = data.draw(st.integers(1, T - 1) | st.just("sqrt"), label="k")
    B = data.draw(st.integers(1, 3), label="B")
    lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="lengths")
    truncate = data.draw(st.none() | st.integers(1, T + 1), label="truncate")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    assume(truncate is None or truncate >= T
           or all(r[0] == "v" for r in spec["outputs"] + spec["feedback"]))
    compare(spec, T, B, seed, k, truncate, np.array(lengths), monkeypatch_module)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# -------------------------------------------------------------------------------------------
# what a checkpointed run keeps, and the graph


def _lstm_run(T=10, k=3, **kw):
    cell = ug.nn.LSTMCell(2, 4, seed=0)
    net = ug.unroll(cell, steps=T, checkpoint=k, **kw)
    xs = np.random.default_rng(0).standard_normal((T, 2, 2))
    out, _ = net(xs)
    return cell, net, out


def test_a_checkpointed_run_keeps_outputs_and_every_kth_state_only():
    cell, net, out = _lstm_run()
    (out * out).sum().backward()
    run = net.last_run
    # the slots it holds, and nothing per step beyond them (no list over all T steps' slots)
    kept = {s for s, v in run.values.items() if v is not None}
    want = set(net._param_slots.values()) | set(net._init_slots.values())
    for slots in net._state_slots.values():
        # the segments are aligned to the end (1, 3, 3, 3 steps): the states entering steps
        # 1, 4, 7, and the final state
        want |= {slots[t] for t in (0, 3, 6, 9)}
    assert kept == want and len(run.values.items()) == len(want)
    assert all(run.values[s] is None for s in range(len(net.nodes)) if s not in want)
    with pytest.raises(IndexError, match="not a slot of this net"):
        run.values[len(net.nodes)]
    # the outputs are the array the call returned: each step's value is its row, read on
    # request; the kept h is such a row too (not a copy)
    for t, node in enumerate(next(iter(net.output_nodes.values()))):
        v = run.value(node)
        assert np.shares_memory(v, out.data) and np.array_equal(v, out.data[t])
    assert np.shares_memory(run.values[net._state_slots["h"][6]], out.data)
    assert not np.shares_memory(run.values[net._state_slots["c"][6]], out.data)
    # and its gradients: those of the leaves (parameters, the inputs' steps, initial states)
    grads = {s for s, g in run.grads.items() if g is not None}
    assert grads <= set(net._param_slots.values()) | {
        s for slots in net._input_slots.values() for s in slots}
    assert set(net._param_slots.values()) <= grads


def test_checkpoint_sqrt_and_k_at_least_t():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    assert ug.unroll(cell, 100, checkpoint="sqrt").checkpoint == 10
    assert ug.unroll(cell, 101, checkpoint="sqrt").checkpoint == 11
    assert ug.unroll(cell, 5, checkpoint=5).checkpoint is None  # one segment: plain BPTT
    assert "checkpoint=3" in repr(ug.unroll(cell, 10, checkpoint=3))


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "half", [3]])
def test_a_bad_checkpoint_is_refused(bad):
    with pytest.raises(ug.CellError, match="checkpoint must be a positive int"):
        ug.unroll(ug.nn.RNNCell(2, 3, seed=0), 10, checkpoint=bad)


@pytest.mark.parametrize("T,k", [(10, 3), (10, 50), (10, 10), (1, "sqrt"), (1, 1)])
def test_checkpoint_with_keep_all_is_refused_whatever_k(T, k):
    """One rule: checkpoint= with keep='all' is refused, even where checkpointing would be
    off (k >= T: one segment)."""
    with pytest.raises(ug.CellError, match=f"checkpoint={k!r} .*keep='all'"):
        ug.unroll(ug.nn.RNNCell(2, 3, seed=0), T, checkpoint=k, keep="all")


def test_the_kept_steps_are_public():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    # each segment's last step; the segments are aligned to the end (the first is short)
    assert ug.unroll(cell, 10, checkpoint=3).kept_steps == (0, 3, 6, 9)
    assert ug.unroll(cell, 9, checkpoint=3).kept_steps == (2, 5, 8)
    assert ug.unroll(cell, 8, checkpoint=3).kept_steps == (1, 4, 7)
    assert ug.unroll(cell, 1000, checkpoint="sqrt").kept_steps[:2] == (7, 39)
    assert ug.unroll(cell, 10, checkpoint=50).kept_steps == ()
    assert ug.unroll(cell, 10).kept_steps == ()


def _graph_record(net):
    slot = {id(n): i for i, n in enumerate(net.nodes)}
    return (str(net.graph), [(n.op, n.name, n.step, n.role, n.shape, tuple(
        slot[id(i)] for i in n.inputs)) for n in net.nodes])


@pytest.mark.parametrize("make", [ug.nn.RNNCell, ug.nn.LSTMCell, ug.nn.GRUCell])
def test_the_graph_is_the_same_whatever_the_execution_options(make):
    cell = make(2, 3, seed=0)
    T = 7
    plain = _graph_record(ug.unroll(cell, T))
    xs = np.random.default_rng(1).standard_normal((T, 2, 2))
    for kw in ({"keep": "all"}, {"checkpoint": 3}, {"checkpoint": "sqrt"},
               {"checkpoint": 1}, {"checkpoint": 2, "truncate": 3}):
        net = ug.unroll(cell, T, **kw)
        truncated = "truncate" in kw
        if not truncated:
            assert _graph_record(net) == plain, kw
        out, _ = net(xs, lengths=[7, 4])
        out.sum().backward()
        net.last_run.full()
        out, _ = net(xs)
        out.sum().backward()
        net.last_run.state_grads()
        if not truncated:
            assert _graph_record(net) == plain, kw  # running it changes nothing
            assert _graph_record(net._masked_twin) == _graph_record(
                ug.unroll(cell, T, masked=True)), kw


def test_a_checkpointed_run_refuses_to_recompute_after_the_weights_change():
    cell, net, out = _lstm_run()
    out.sum().backward()
    run = net.last_run
    grads = [p.grad.copy() for p in cell.parameters().values()]
    ug.optim.SGD(cell.parameters(), lr=0.1).step()
    with pytest.raises(ug.UnrollGraphError, match="changed"):
        run.value(net.state_nodes["c"][4])
    with pytest.raises(ug.UnrollGraphError, match="changed"):
        run.state_grads("h")
    assert run.value(net.output_nodes["y"][4]).shape == (2, 4)  # kept: still answers
    assert all(np.array_equal(p.grad, g) for p, g in zip(cell.parameters().values(), grads))


def test_a_checkpointed_run_draws_from_a_recomputation(tmp_path):
    cell, net, out = _lstm_run(T=6, k=2)
    out.sum().backward()
    for detail in ("ops", "steps", "textbook"):
        dot = ug.to_dot(net, detail=detail)
        assert "checkpointed: a run keeps the state every 2 steps" in dot, detail
        # one mark, the same in every view: a ✓ after the kept state's title and a thick
        # border (h and c in the ops and textbook views, the step's box in the steps view),
        # explained once in the legend
        per = 1 if detail == "steps" else 2
        n_kept = len(net.kept_steps)
        assert dot.count("✓") == per * n_kept + 1, detail
        assert dot.count('penwidth="4.5"') + dot.count("penwidth=4.5") == per * n_kept, detail
        assert "✓, thick border" in dot and "a state the checkpointed run keeps" in dot
    plain = ug.to_dot(ug.unroll(cell, 6), detail="ops")
    assert "kept" not in plain and "checkpointed" not in plain and "✓" not in plain


@pytest.mark.parametrize("detail", ["textbook", "elide"])
def test_an_elided_column_says_how_many_kept_states_it_hides(detail):
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, 40, checkpoint=4)
    out, _ = net(np.ones((40, 1, 2)))
    out.sum().backward()
    dot = ug.to_dot(net, detail=detail)
    a, b = (2, 37)
    hidden = sum(1 for t in net.kept_steps if a <= t <= b)
    assert f"steps {a} … {b}" in dot
    assert f"{hidden} kept" in dot and "among them" in dot
    full = net.last_run.full()
    assert all(isinstance(v, np.ndarray) for v in full.values)
    # the recomputation reproduces the run's numbers bit for bit
    run = net.last_run
    for s, v in enumerate(run.values):
        if v is not None:
            assert np.array_equal(full.values[s], v)
    for k, p in cell.parameters().items():
        assert np.array_equal(full.grads[net._param_slots[k]], p.grad), k


def test_gradient_flow_reads_a_checkpointed_run():
    cell, net, out = _lstm_run(T=6, k=2)
    (out * out).sum().backward()
    plain = ug.unroll(cell, 6)
    xs = np.random.default_rng(0).standard_normal((6, 2, 2))
    out2, _ = plain(xs)
    (out2 * out2).sum().backward()
    a = ug.gradient_flow(net.last_run)
    b = ug.gradient_flow(plain.last_run)
    for name in ("h", "c"):
        np.testing.assert_allclose(a.state_grad_norms[name], b.state_grad_norms[name],
                                   rtol=1e-12)
        np.testing.assert_allclose(a.jacobian_norms[name], b.jacobian_norms[name],
                                   rtol=1e-12)
    np.testing.assert_allclose(a.weight_contribution_norms["weight_hh"],
                               b.weight_contribution_norms["weight_hh"], rtol=1e-12)


# -- errors raised inside a segment name the step of the whole run ---------------------------

def _anomaly_cell(f):
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", 0.5 * np.eye(2))
    h_next = h @ W.T + f(x)
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


def _message(f, xs, T, truncate, lengths, backward, **kw):
    """The error message of a run (and backward) under detect_anomaly, or None."""
    net = ug.unroll(_anomaly_cell(f), T, truncate=truncate, **kw)
    try:
        with ug.detect_anomaly():
            out, h = net(ug.tensor(xs, requires_grad=True), lengths=lengths)
            if backward:
                (out.sum() + h.sum()).backward()
    except ug.AnomalyError as exc:
        return str(exc)
    return None


@settings(max_examples=max(10, EXAMPLES), deadline=None)
@given(T=st.integers(2, 14), k=st.integers(1, 13), where=st.integers(0, 13),
       backward=st.booleans(), truncate=st.one_of(st.none(), st.integers(1, 14)),
       lengths=st.booleans())
def test_an_anomaly_names_the_step_of_the_whole_run(T, k, where, backward, truncate, lengths):
    """A NaN (log of a negative input, forward) or an Inf (the gradient of sqrt at 0,
    backward) at step ``where`` is named as the plain net names it, whatever segment of a
    checkpointed run it falls in."""
    assume(k < T)
    where %= T
    truncate = None if truncate is None else min(truncate, T)
    xs = np.ones((T, 2, 2))
    xs[where, 0, 1] = 0.0 if backward else -1.0
    lens = np.array([T, max(1, T - 3)]) if lengths else None
    f = ug.sqrt if backward else ug.log
    want = _message(f, xs, T, truncate, lens, backward)
    got = _message(f, xs, T, truncate, lens, backward, checkpoint=k)
    assert got == want
    if not backward:  # a forward NaN at step `where` is always caught, and named
        assert want is not None and f"@{where} " in want


def test_an_anomaly_in_a_late_segment_names_its_step():
    xs = np.ones((20, 1, 2))
    xs[17, 0, 1] = -1
    msg = _message(ug.log, xs, 20, None, None, False, checkpoint=5)
    assert "forward of n5@17 produced NaN" in msg  # as print(net) names it
    assert "\nn5@17 = log(x@17)" in str(ug.unroll(_anomaly_cell(ug.log), 20))
    xs = np.ones((20, 1, 2))
    xs[13, 0, 1] = 0
    msg = _message(ug.sqrt, xs, 20, None, None, True, checkpoint=5)
    assert "backward into x@13 produced Inf" in msg


# pieces of names that read like steps, or like markup, to a careless message maker
_HOSTILE = st.lists(st.sampled_from(
    ["@3", "@0", "x@12", "step 2", "steps 1", " @1", "{", "}", "{0}", '"', "'", "\n", "\\",
     "<b>", "#n4", "h", "é", "%d"]), min_size=1, max_size=5).map("".join)


def _hostile_cell(names, f):
    cname, xname, hname, wname, fname = names
    cell = ug.Cell(cname)
    x = cell.input(xname, (2,))
    h = cell.state(hname, (2,))
    W = cell.param(wname, 0.5 * np.eye(2))
    h_next = h @ W.T + f(x, fname)
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


def _error(cell, xs, T, backward, **kw):
    net = ug.unroll(cell, T, **kw)
    try:
        with ug.detect_anomaly():
            out, h = net(ug.tensor(xs, requires_grad=True))
            if backward:
                (out.sum() + h.sum()).backward()
    except ug.UnrollGraphError as exc:
        return type(exc), str(exc)
    return None


@settings(max_examples=max(10, EXAMPLES), deadline=None)
@given(names=st.lists(_HOSTILE, min_size=5, max_size=5, unique=True),
       T=st.integers(2, 12), k=st.integers(1, 11), where=st.integers(0, 11),
       kind=st.sampled_from(["forward", "backward", "raises"]))
def test_hostile_names_reach_a_segments_error_as_written(names, T, k, where, kind):
    """Names holding text that looks like a step (``@3``, ``step 2``), braces, quotes and
    newlines appear in an error raised inside any segment of a checkpointed run exactly as
    written, and the step named is the plain net's: the segment counts its steps from its
    first step where the message is made, never by editing the message's text."""
    assume(k < T)
    where %= T
    xs = np.ones((T, 2, 2))
    if kind == "raises":  # an op failing outright: the executor names its step
        opname = "fails_on_negatives_test"
        ug.ops.defop(opname, _fail_on_negatives, [lambda g, ans, a: g], replace=True)
        f = lambda x, name: apply(opname, x, name=name)  # noqa: E731
        xs[where, 1, 0] = -1.0
    else:
        f = ug.sqrt if kind == "backward" else ug.log
        f = (lambda x, name, f=f: f(x, name=name))
        xs[where, 0, 1] = 0.0 if kind == "backward" else -1.0
    try:
        want = _error(_hostile_cell(names, f), xs, T, kind == "backward")
        got = _error(_hostile_cell(names, f), xs, T, kind == "backward", checkpoint=k)
    finally:
        ug.ops._REGISTRY.pop("fails_on_negatives_test", None)
    assert got == want
    cname, xname, _h, _w, fname = names
    msg = got[1]
    if kind == "forward":
        assert got[0] is ug.AnomalyError and f"forward of {fname}@{where} produced" in msg
    elif kind == "backward":
        assert got[0] is ug.AnomalyError and f"backward into {xname}@{where} produced" in msg
    else:
        assert got[0] is ug.OpError and issubclass(ug.OpError, ug.ShapeError)
        assert msg.startswith(f"unrolled cell {cname!r}, step {where}: ")
        assert f"{xname}@{where} (2, 2)" in msg


def _fail_on_negatives(a):
    if np.any(a < 0):
        raise ValueError("a negative entry")
    return a + 0.0


def _state_cell(names, kind):
    """A cell whose failing op reads the state: an op raising on a negative input, or
    ``sqrt`` of the state (the gradient into a zero state is Inf). The state's next value is
    unnamed, so the errors name it as the printout does (``n6@4``)."""
    cname, xname, hname, wname, fname = names
    cell = ug.Cell(cname)
    x = cell.input(xname, (2,))
    h = cell.state(hname, (2,))
    W = cell.param(wname, 0.5 * np.eye(2))
    h_next = ug.relu(x @ W.T)
    cell.feedback(h, h_next)
    if kind == "raises":
        cell.output("y", apply("fails_on_negatives2_test", h, x, name=fname) + h_next)
    else:
        cell.output("y", ug.sqrt(h, name=fname) + h_next)
    return cell


@settings(max_examples=max(10, EXAMPLES), deadline=None)
@given(names=st.lists(_HOSTILE, min_size=5, max_size=5, unique=True),
       T=st.integers(2, 12), k=st.integers(1, 11), where=st.integers(1, 11),
       kind=st.sampled_from(["backward", "raises"]))
def test_a_segments_first_step_names_the_state_the_step_before_handed_on(
        names, T, k, where, kind):
    """An error at any step, each segment's first among them, names the state read there as
    the plain net does: the value the step before handed on (``n5@13``), never the net's
    initial state (``h_init``), and every other node by the name print(net) gives it."""
    assume(k < T)
    where = 1 + (where - 1) % (T - 1)
    xs = np.ones((T, 2, 2))
    if kind == "raises":
        ug.ops.defop("fails_on_negatives2_test",
                     lambda h, x: _fail_on_negatives(x) + h,
                     [lambda g, ans, h, x: g, lambda g, ans, h, x: g], replace=True)
        xs[where, 1, 0] = -1.0
    else:
        xs[where - 1, 0, 1] = -1.0  # relu makes the state handed on 0: sqrt's gradient is Inf
    try:
        plain = ug.unroll(_state_cell(names, kind), T)
        want = _error(_state_cell(names, kind), xs, T, kind == "backward")
        got = _error(_state_cell(names, kind), xs, T, kind == "backward", checkpoint=k)
    finally:
        ug.ops._REGISTRY.pop("fails_on_negatives2_test", None)
    assert want is not None and got == want
    state = plain.graph.display_name(plain.state_nodes[names[2]][where - 1])
    assert f"{names[2]}_init" not in got[1] and state in got[1]
    if kind == "raises":
        assert got[0] is ug.OpError and isinstance(got[1], str)
        assert got[1].startswith(f"unrolled cell {names[0]!r}, step {where}: ")
    else:
        assert got[0] is ug.AnomalyError and f"backward into {state} produced Inf" in got[1]


# -- what a checkpointed run answers after the parameters change -----------------------------

@pytest.mark.parametrize("make", [ug.nn.RNNCell, ug.nn.LSTMCell])
@pytest.mark.parametrize("T,k", [(10, 3), (9, 3), (7, 2)])
def test_the_kept_states_gradients_are_recomputed_as_full_bptt_gives_them(make, T, k):
    """A checkpointed run keeps the kept states' values, not their gradients (T/k more
    states' worth, beyond what the backward pass needs): Run.grad of a kept state
    recomputes, gives what full BPTT gives, and after an optimizer step refuses, naming
    the accessor; as does state_grads() (every step)."""
    xs = np.random.default_rng(1).normal(size=(T, 2, 2))
    want_net = ug.unroll(make(2, 3, seed=0), T)
    out, st = want_net(xs)
    finals = st if isinstance(st, tuple) else (st,)
    (out.sum() + sum((f * f).sum() for f in finals)).backward()
    want = want_net.last_run.state_grads(None)
    cell = make(2, 3, seed=0)
    net = ug.unroll(cell, T, checkpoint=k)
    out, st = net(xs)
    finals = st if isinstance(st, tuple) else (st,)
    (out.sum() + sum((f * f).sum() for f in finals)).backward()
    run = net.last_run
    want = want if isinstance(want, dict) else {cell.states[0] if isinstance(
        cell.states, list) else next(iter(cell.states)): want}
    for name, g in want.items():
        for t in sorted(ug.checkpoint.kept_steps(net)):
            tight(run.grad(net.state_nodes[name][t]), g[t], f"{name}@{t}")
    assert run._full is not None  # recomputed
    run.release()
    ug.optim.SGD(cell.parameters(), lr=0.1).step()
    name, t = next(iter(want)), sorted(ug.checkpoint.kept_steps(net))[0]
    with pytest.raises(ug.UnrollGraphError, match=r"^Run\.grad\(\): the parameter "):
        run.grad(net.state_nodes[name][t])
    with pytest.raises(ug.UnrollGraphError) as err:
        run.state_grads()
    msg = str(err.value)
    assert msg.startswith("Run.state_grads(): the parameter ")
    assert "kept steps [" in msg and "no state's gradient" in msg and "Run.full" not in msg


def test_a_stale_run_names_the_accessor_called_and_what_changed():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    xt = ug.tensor(np.ones((6, 1, 2)))
    for ck in (None, 2):
        net = ug.unroll(cell, 6, checkpoint=ck)
        out, _ = net(xt)
        out.sum().backward()
        run = net.last_run
        xt.data = xt.data + 1
        for name in ("step_contributions", "grad"):
            if ck is None and name == "grad" and run.grads[-2] is not None:
                continue
            with pytest.raises(ug.UnrollGraphError) as err:
                if name == "grad":
                    run.grad(net.nodes[-2])
                else:
                    run.step_contributions("weight_hh")
            msg = str(err.value)
            assert msg.startswith(f"Run.{name}(): the input 'x' of 'RNNCell' has changed")
            assert "parameters" not in msg and "Run.full" not in msg
        xt.data = np.ones((6, 1, 2))


def test_release_drops_the_recomputation_and_the_next_request_makes_it_again():
    net = ug.unroll(ug.nn.LSTMCell(2, 3, seed=0), 9, checkpoint=3)
    out, _ = net(np.random.default_rng(0).normal(size=(9, 2, 2)))
    out.sum().backward()
    run = net.last_run
    first = run.state_grads()
    assert run._full is not None  # held on the run until released
    run.release()
    assert run._full is None
    again = run.state_grads()
    for name in first:
        assert np.array_equal(first[name], again[name])


# -- what a checkpointed run holds, and the segments it need not recompute -------------------

def _count_segment_forwards(monkeypatch) -> list:
    calls = []
    real = ug.checkpoint._SegmentRun.forward

    def counted(self):
        calls.append(self.keep)
        return real(self)

    monkeypatch.setattr(ug.checkpoint._SegmentRun, "forward", counted)
    return calls


@pytest.mark.parametrize("make,recomputed", [(ug.nn.RNNCell, False), (ug.nn.LSTMCell, True),
                                             (ug.nn.GRUCell, True)])
def test_a_segment_whose_backward_reads_only_kept_values_is_not_recomputed(
        make, recomputed, monkeypatch):
    """The Elman RNN's backward pass reads its hidden states (the outputs the call returns),
    its inputs and the entering state: its segments are not run again; an LSTM's and a GRU's
    read their gates, which only a recomputation gives. Either way: full BPTT's gradients,
    and Run.full() reproduces the run bit for bit (it raises otherwise)."""
    T, k = 11, 3
    xs = np.random.default_rng(2).normal(size=(T, 2, 3))
    want_cell = make(3, 4, seed=0)
    out, _ = ug.unroll(want_cell, T)(xs)
    (out * out).sum().backward()
    cell = make(3, 4, seed=0)
    net = ug.unroll(cell, T, checkpoint=k)
    out, _ = net(xs)
    calls = _count_segment_forwards(monkeypatch)
    (out * out).sum().backward()
    # ceil(11 / 3) = 4 segments; the last one's values come from the forward pass, which
    # held them for this backward pass: 3 recomputations
    assert len(calls) == (3 if recomputed else 0)
    for name, p in cell.parameters().items():
        tight(p.grad, want_cell.parameters()[name].grad, name)
    full = net.last_run.full()  # (checks the kept numbers bit for bit)
    assert all(isinstance(v, np.ndarray) for v in full.values)
    dot = ug.to_dot(net, detail="ops")  # diagrams: drawn from the recomputation
    assert "checkpointed: a run keeps the state every 3 steps" in dot
    assert dot.count("✓") >= len(net.kept_steps)


@settings(max_examples=max(10, EXAMPLES // 2), deadline=None)
@given(spec=diff.cells(), data=st.data())
def test_a_segment_put_in_place_gives_the_bits_a_recomputation_gives(spec, data):
    """Where a segment's backward pass reads only what the run kept, it is put in place
    instead of recomputed: the gradients are the same bits as with the recomputation."""
    T = data.draw(st.integers(2, 9), label="T")
    k = data.draw(st.integers(1, T - 1), label="k")
    B = data.draw(st.integers(1, 3), label="B")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    values = diff._param_values(spec, seed)
    xs = [ug.tensor(rng.uniform(-1, 1, (T, B, d)), requires_grad=True) for d in spec["in"]]
    got = []
    for place in (True, False):
        cell = diff.build_cell(spec, values)
        net = ug.unroll(cell, T, checkpoint=k)
        with pytest.MonkeyPatch.context() as mp:
            if not place:
                mp.setattr(ug.checkpoint, "_reads_kept_only", lambda seg: False)
            for x in xs:
                x.grad = None
            out, _ = net(xs[0] if len(xs) == 1 else {f"x{j}": x for j, x in enumerate(xs)})
            outs = out if isinstance(out, dict) else {"y": out}
            sum((o * o).sum() for o in outs.values()).backward()
        got.append([p.grad for p in cell.parameters().values()] + [x.grad for x in xs])
    for a, b in zip(*got):
        assert (a is None) == (b is None)
        if a is not None:
            assert np.array_equal(a, b, equal_nan=True)


def test_a_checkpointed_run_keeps_no_segment_buffers_and_no_per_step_lists():
    """Between the forward and the backward pass (and after it) a checkpointed run holds
    its outputs, its kept states and the parameters' gradients, and until the backward
    pass the last segment's run (which that pass reads instead of recomputing it): no
    other segment's arrays (the segment nets have no buffer pool), no list over all T
    steps' slots."""
    T, k = 40, 7
    cell = ug.nn.LSTMCell(3, 4, seed=0)
    net = ug.unroll(cell, T, checkpoint=k)
    out, _ = net(np.random.default_rng(0).normal(size=(T, 2, 3)))
    run = net.last_run
    assert all(seg._pool is None for seg in net._segment_nets.values())
    n_states = len(net._state_slots) * len(net.kept_steps)
    assert len(run.values.items()) == n_states + len(net._param_slots) + len(net._init_slots)
    held = run._held
    assert held is not None and held.net.steps == k  # (the last segment is a full one)
    assert held.values[held.net._state_slots["h"][-1]] is not None  # (its values are there)
    out.sum().backward()
    assert run._held is None  # (let go by the backward pass)
    assert len(run.grads.items()) == len(net._param_slots)
    for s, g in run.grads.items():  # each parameter's gradient: one array of its own
        assert g.base is None and g.shape == net.nodes[s].shape


@pytest.mark.parametrize("make", [ug.nn.LSTMCell, ug.nn.GRUCell])
def test_the_last_segment_is_held_for_one_backward_pass_and_recomputed_after(make,
                                                                             monkeypatch):
    """The forward pass holds the last segment's run for the first backward pass (which
    reads it instead of recomputing it) and lets it go there; a second backward pass of the
    same call recomputes every segment and gives the same gradients again. The other
    segments ran compiled for the forward pass alone."""
    T, k = 10, 3
    xs = np.random.default_rng(3).normal(size=(T, 2, 3))
    cell = make(3, 4, seed=0)
    net = ug.unroll(cell, T, checkpoint=k)
    out, _ = net(xs)
    run = net.last_run
    assert run._held is not None and not getattr(run._held.net, "forward_only", False)
    forward_only = [seg for seg in net._segment_nets.values()
                    if getattr(seg, "forward_only", False)]
    # (the three segments before the last: 1, 3 and 3 steps)
    assert sorted(seg.steps for seg in forward_only) == [1, k]
    loss = (out * out).sum()
    calls = _count_segment_forwards(monkeypatch)
    loss.backward(retain_graph=True)  # (walked again below)
    assert len(calls) == 3 and run._held is None
    first = {name: p.grad.copy() for name, p in cell.parameters().items()}
    loss.backward()
    assert len(calls) == 3 + 4
    for name, p in cell.parameters().items():
        assert np.array_equal(p.grad, 2 * first[name]), name
