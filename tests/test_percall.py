"""What a net keeps from call to call (its plan: the parameter slots, the slots needing a
gradient per requires-grad pattern, the one-dtype check per dtype, the leaves' kinds) never
changes a result: every sequence of calls gives what a fresh net gives, and what the generic
reference executor gives (a net called under ``detect_anomaly()`` runs it)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.run import _plan

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
T, D, H = 4, 3, 5


def _data(batch, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, batch, D)).astype(dtype), rng.normal(size=(T, batch, H))


def _step(net, xs, G, state=None, anomaly=False, keep_grads=False):
    """One training step's gradients: the parameters' (and the inputs' and initial state's,
    where they require grad) after ``(out * G).sum().backward()``."""
    cell = net.cell
    if not keep_grads:
        cell.zero_grad()
    if anomaly:
        with ug.detect_anomaly():
            out, _ = net(xs, state=state)
            (out * ug.tensor(G.astype(out.dtype))).sum().backward()
    else:
        out, _ = net(xs, state=state)
        (out * ug.tensor(G.astype(out.dtype))).sum().backward()
    grads = {k: None if p.grad is None else p.grad.copy() for k, p in cell.parameters().items()}
    for name, t in (("xs", xs), ("state", state)):
        if isinstance(t, ug.Tensor) and t.requires_grad:
            grads[name] = t.grad.copy()
            t.grad = None
    return out.data.copy(), grads


def _fresh(net, keep=None):
    """A net with nothing cached: the same cell, unrolled again."""
    return ug.unroll(net.cell, steps=net.steps, keep=keep or net.keep)


def _assert_same(a, b, rtol=0.0):
    out_a, grads_a = a
    out_b, grads_b = b
    np.testing.assert_allclose(out_a, out_b, rtol=rtol, atol=0)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        if grads_a[k] is None or grads_b[k] is None:
            assert grads_a[k] is None and grads_b[k] is None, k
        else:
            assert grads_a[k].dtype == grads_b[k].dtype, k
            np.testing.assert_allclose(grads_a[k], grads_b[k], rtol=rtol, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_a_parameter_that_stops_requiring_grad_gets_none_and_comes_back(kind):
    cell = CELLS[kind](D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    x, G = _data(2)
    xs = ug.tensor(x)
    first = _step(net, xs, G)
    name = sorted(cell.parameters())[0]
    p = cell.parameters()[name]
    p.requires_grad = False
    frozen = _step(net, xs, G)
    assert frozen[1][name] is None
    _assert_same(frozen, _step(_fresh(net), xs, G))
    p.requires_grad = True
    _assert_same(_step(net, xs, G), first)


def test_requires_grad_changed_between_forward_and_backward_is_what_backward_sees():
    cell = ug.nn.RNNCell(D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    x, G = _data(2)
    _step(net, ug.tensor(x), G)  # the plan exists
    cell.zero_grad()
    out, _ = net(ug.tensor(x))
    cell.weight_hh.requires_grad = False
    (out * ug.tensor(G)).sum().backward()
    assert cell.weight_hh.grad is None and cell.weight_ih.grad is not None
    cell.weight_hh.requires_grad = True


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_batch_size_dtype_and_state_may_change_from_call_to_call(kind):
    cell = CELLS[kind](D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    for batch, dtype in [(2, np.float64), (3, np.float64), (2, np.float32), (1, np.float64)]:
        x, G = _data(batch, dtype, seed=batch)
        _assert_same(_step(net, ug.tensor(x), G), _step(_fresh(net), ug.tensor(x), G),
                     rtol=1e-6 if dtype == np.float32 else 0.0)
    x, G = _data(2)
    names = list(cell.states)
    rng = np.random.default_rng(5)
    arrays = tuple(rng.normal(size=(2, H)) for _ in names)
    for state in (None, arrays, tuple(ug.tensor(a, requires_grad=True) for a in arrays),
                  tuple(ug.tensor(a) for a in arrays), None):
        one = state[0] if state is not None and len(names) == 1 else state
        got = _step(net, ug.tensor(x), G, state=one)
        fresh_state = one
        if isinstance(one, ug.Tensor):
            fresh_state = ug.tensor(one.data, requires_grad=one.requires_grad)
        elif isinstance(one, tuple) and isinstance(one[0], ug.Tensor):
            fresh_state = tuple(ug.tensor(s.data, requires_grad=s.requires_grad) for s in one)
        want = _step(_fresh(net), ug.tensor(x), G, state=fresh_state)
        if isinstance(one, tuple) and isinstance(one[0], ug.Tensor) and one[0].requires_grad:
            for s, f in zip(one, fresh_state):
                np.testing.assert_array_equal(s.grad, f.grad)
        _assert_same(got, want)


def test_inputs_that_require_grad_and_then_do_not():
    cell = ug.nn.LSTMCell(D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    x, G = _data(2)
    a = _step(net, ug.tensor(x, requires_grad=True), G)
    b = _step(net, ug.tensor(x), G)
    assert "xs" in a[1] and "xs" not in b[1]
    _assert_same(a, _step(_fresh(net), ug.tensor(x, requires_grad=True), G))


def test_detect_anomaly_between_calls_runs_the_reference_and_names_the_node():
    cell = ug.nn.RNNCell(D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    x, G = _data(2)
    fast = _step(net, ug.tensor(x), G)
    reference = _step(net, ug.tensor(x), G, anomaly=True)
    _assert_same(fast, reference, rtol=1e-12)
    _assert_same(_step(net, ug.tensor(x), G), fast)
    bad = x.copy()
    bad[1, 0, 0] = np.inf
    with pytest.raises(ug.AnomalyError, match=r"@1"), ug.detect_anomaly():
        net(ug.tensor(bad))
    _assert_same(_step(net, ug.tensor(x), G), fast)


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_an_in_place_edit_of_grad_between_calls_never_reaches_the_next_call(keep):
    """Optimizers and clipping edit .grad in place: the array a parameter's .grad holds is
    its own, never one the run (or the next run) reads or writes."""
    cell = ug.nn.LSTMCell(D, H, seed=0)
    net = ug.unroll(cell, steps=T, keep=keep)
    x, G = _data(2)
    want = _step(_fresh(net), ug.tensor(x), G)
    _step(net, ug.tensor(x), G)
    run = net.last_run
    kept = {k: run.grad(p).copy() for k, p in cell.parameters().items()}
    for p in cell.parameters().values():
        p.grad[...] = 1e6  # an in-place edit, as clip_grad_value and optimizers make
    for k, p in cell.parameters().items():
        np.testing.assert_array_equal(run.grad(p), kept[k])
    # accumulation onto the edited arrays, then a fresh step
    out, grads = _step(net, ug.tensor(x), G, keep_grads=True)
    for k in grads:
        np.testing.assert_allclose(grads[k], 1e6 + want[1][k], rtol=1e-12)
    _assert_same(_step(net, ug.tensor(x), G), want)
    opt = ug.optim.SGD(cell.parameters().values(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        got = _step(net, ug.tensor(x), G)
        _assert_same(got, _step(_fresh(net), ug.tensor(x), G))
        ug.optim.clip_grad_value(cell.parameters().values(), 0.5)
        opt.step()


def test_the_plan_is_remade_when_the_schedule_is():
    net = ug.unroll(ug.nn.RNNCell(D, H, seed=0), steps=T)
    x, G = _data(2)
    first = _step(net, ug.tensor(x), G)
    plan = _plan(net)
    assert _plan(net) is plan and plan.needs  # kept from call to call
    net._prog = list(net._prog)  # another schedule (the same entries): a new plan
    assert _plan(net) is not plan and _plan(net).prog is net._prog
    _assert_same(_step(net, ug.tensor(x), G), first)


OPS = st.sampled_from(["step", "toggle_param", "toggle_input", "batch", "float32", "state",
                       "anomaly", "edit_grad", "no_grad"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(CELLS)), keep=st.sampled_from(["needed", "all"]),
       ops=st.lists(OPS, min_size=2, max_size=7))
def test_any_sequence_of_calls_gives_what_a_fresh_net_gives(kind, keep, ops):
    cell = CELLS[kind](D, H, seed=0)
    net = ug.unroll(cell, steps=T, keep=keep)
    batch, dtype, state, input_grad, anomaly = 2, np.float64, None, False, False
    names = sorted(cell.parameters())
    for k, op in enumerate(ops):
        if op == "toggle_param":
            p = cell.parameters()[names[k % len(names)]]
            p.requires_grad = not p.requires_grad
        elif op == "toggle_input":
            input_grad = not input_grad
        elif op == "batch":
            batch = 3 if batch == 2 else 2
            state = None
        elif op == "float32":
            dtype = np.float32 if dtype == np.float64 else np.float64
        elif op == "state":
            rng = np.random.default_rng(k)
            arrays = [rng.normal(size=(batch, H)) for _ in cell.states]
            state = tuple(ug.tensor(a, requires_grad=bool(k % 2)) for a in arrays)
        elif op == "anomaly":
            anomaly = not anomaly
        elif op == "edit_grad":
            for p in cell.parameters().values():
                if p.grad is not None:
                    p.grad[...] = -7.0
        elif op == "no_grad":
            with ug.no_grad():
                out, _ = net(ug.tensor(_data(batch, dtype)[0]))
            assert not out.requires_grad
        x, G = _data(batch, dtype, seed=k)
        one = state[0] if state is not None and len(state) == 1 else state
        if not any(p.requires_grad for p in cell.parameters().values()) and not input_grad \
                and not (state is not None and state[0].requires_grad):
            continue  # nothing to differentiate
        got = _step(net, ug.tensor(x, requires_grad=input_grad), G, state=one,
                    anomaly=anomaly)
        copy = None if state is None else tuple(
            ug.tensor(s.data, requires_grad=s.requires_grad) for s in state)
        copy = copy[0] if copy is not None and len(copy) == 1 else copy
        want = _step(_fresh(net), ug.tensor(x, requires_grad=input_grad), G, state=copy,
                     anomaly=True)  # the reference executor
        _assert_same(got, want, rtol=1e-5 if dtype == np.float32 else 1e-10)
    for p in cell.parameters().values():
        p.requires_grad = True


@pytest.mark.parametrize("options", [{"checkpoint": 2}, {"lengths": [4, 2]}, {"truncate": 2}])
def test_checkpointed_masked_and_truncated_nets_keep_their_plans_right(options):
    """A checkpointed net's segments and a masked twin are nets of their own, with plans
    of their own: toggling requires_grad between calls reaches them too."""
    cell = ug.nn.GRUCell(D, H, seed=0)
    lengths = options.get("lengths")
    unroll_options = {k: v for k, v in options.items() if k != "lengths"}
    net = ug.unroll(cell, steps=T, **unroll_options)
    x, G = _data(2)

    def step(net):
        cell.zero_grad()
        out, _ = net(ug.tensor(x), lengths=lengths)
        (out * ug.tensor(G)).sum().backward()
        return {k: None if p.grad is None else p.grad.copy()
                for k, p in cell.parameters().items()}

    for frozen in ("weight_hh", None, "bias_ih", None):
        for k, p in cell.parameters().items():
            p.requires_grad = k != frozen
        got = step(net)
        want = step(ug.unroll(cell, steps=T, **unroll_options))
        for k in got:
            if k == frozen:
                assert got[k] is None and want[k] is None
            else:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=k)


def _init_cell():
    """A cell whose state starts from a declared value (not zeros)."""
    cell = ug.Cell("with_init")
    x = cell.input("x", (D,))
    h = cell.state("h", (H,), init=np.linspace(-1.0, 1.0, H))
    W = cell.param("W", np.random.default_rng(0).normal(size=(D, H)) * 0.5)
    U = cell.param("U", np.random.default_rng(1).normal(size=(H, H)) * 0.3)
    h_next = ug.tanh(x @ W + h @ U)
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_declared_initial_states_and_lean_plans_follow_the_batch_size_and_dtype(keep):
    """The plan keeps each initial state's shape for the last batch size and the last lean
    forward plan: calls that change the batch size, the dtype and whether a state is given,
    in any order, give what a fresh net gives (the reference executor)."""
    cell = _init_cell()
    net = ug.unroll(cell, steps=T, keep=keep)
    calls = [(1, np.float64, False), (3, np.float64, False), (1, np.float32, False),
             (3, np.float32, True), (1, np.float64, False), (2, np.float64, True),
             (2, np.float64, False), (1, np.float64, False)]
    for k, (batch, dtype, with_state) in enumerate(calls):
        x, G = _data(batch, dtype, seed=k)
        state = ug.tensor(np.full((batch, H), 0.25)) if with_state else None
        got = _step(net, ug.tensor(x), G, state=state)
        want = _step(ug.unroll(cell, steps=T, keep=keep), ug.tensor(x), G, state=state,
                     anomaly=True)
        _assert_same(got, want, rtol=1e-5 if dtype == np.float32 else 1e-10)
        if not with_state:  # the declared init, broadcast over the batch, is where step 0 starts
            first = net.last_run.full().values[net.slot(net.init_nodes["h"])]
            np.testing.assert_array_equal(
                first, np.broadcast_to(np.linspace(-1.0, 1.0, H), (batch, H)).astype(dtype))
