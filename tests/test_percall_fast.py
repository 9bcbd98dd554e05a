"""The fast paths of a net's call and of its loss give what the general paths give, bit for
bit: one float array as input (copied in a few steps) against the same array given by name;
the outputs joined into one read-only array against the stacked per-step values; the
one-seeded short walk against the generic walk (tests/test_percall_walk.py covers it over
cells and loss forms: here, what it shares with the caller). A gradient that is a view of a
leaf's memory (the loss ``(out * G).sum()`` hands ``out`` the value of ``G``) is not changed
by a later edit of that leaf in place."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrollgraph as ug

run_module = __import__("unrollgraph.run", fromlist=["Run"])
walk = __import__("unrollgraph.tensor", fromlist=["_call_loss_walk"])

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
D, H = 3, 4
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _finals(final):
    return [final] if isinstance(final, ug.Tensor) else list(final)


def _call_and_grads(net, cell, xs, G):
    """Outputs, final states and every parameter's gradient of one training step."""
    cell.zero_grad()
    out, final = net(xs)
    (out * ug.tensor(G)).sum().backward()
    got = [out.data.copy()] + [f.data.copy() for f in _finals(final)]
    return got, [p.grad.copy() for p in cell.parameters().values()], out, final


@SETTINGS
@given(kind=st.sampled_from(sorted(CELLS)), dtype=st.sampled_from([np.float64, np.float32]),
       batches=st.lists(st.integers(1, 3), min_size=2, max_size=3), seed=st.integers(0, 9))
def test_one_float_array_takes_the_fast_path_to_what_the_general_path_gives(
        kind, dtype, batches, seed):
    # a call right after a call with another batch size or dtype reuses nothing stale
    T = 3
    cell = CELLS[kind](D, H, seed=seed, dtype=dtype)
    net = ug.unroll(cell, steps=T)
    rng = np.random.default_rng(seed)
    for B in batches:
        xs = rng.normal(size=(T, B, D)).astype(dtype)
        G = rng.normal(size=(T, B, H)).astype(dtype)
        before = xs.copy()
        fast = _call_and_grads(net, cell, xs, G)
        general = _call_and_grads(net, cell, {"x": xs}, G)  # (a dict: the general path)
        for a, b in zip(fast[0] + fast[1], general[0] + general[1]):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
        x_t = net.last_run.xs["x"]
        assert x_t.dtype == dtype and not np.shares_memory(x_t.data, xs)
        assert not x_t.data.flags.writeable and x_t.node.name == "x"
        np.testing.assert_array_equal(xs, before)  # the caller's array is never changed


@SETTINGS
@given(kind=st.sampled_from(sorted(CELLS)), seed=st.integers(0, 9),
       calls=st.lists(st.sampled_from(["array", "dict", "lengths", "tensor", "float32"]),
                      min_size=2, max_size=5))
def test_a_fast_call_after_any_other_call_gives_the_general_paths_result(kind, seed, calls):
    T, B = 3, 2
    cell = CELLS[kind](D, H, seed=seed)
    net = ug.unroll(cell, steps=T)
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, B, D))
    G = rng.normal(size=(T, B, H))
    want = _call_and_grads(net, cell, {"x": xs}, G)
    for how in calls:
        if how == "lengths":
            out, _ = net(xs, lengths=[T, 1])
            assert net.last_run.lengths.tolist() == [T, 1]
            continue
        if how == "float32":  # (a float32 array for a float64 cell: widened, as before)
            got = _call_and_grads(net, cell, xs.astype(np.float32), G)
            again = _call_and_grads(net, cell, {"x": xs.astype(np.float32)}, G)
        else:
            arg = {"array": xs, "dict": {"x": xs}, "tensor": ug.tensor(xs)}[how]
            got, again = _call_and_grads(net, cell, arg, G), want
        for a, b in zip(got[0] + got[1], again[0] + again[1]):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 2, 3)),  # steps
    np.zeros((3, 2, 5)),  # feature size
    np.zeros((3, 3)),  # no batch axis
    np.zeros((2, 3, 3)),  # batch-first
])
def test_a_float_array_of_the_wrong_shape_gets_the_general_paths_message(bad):
    net = ug.unroll(ug.nn.RNNCell(D, H, seed=0), steps=3)
    with pytest.raises(ug.ShapeError) as fast:
        net(bad)
    with pytest.raises(ug.ShapeError) as general:
        net({"x": bad})
    assert str(fast.value) == str(general.value)


@pytest.mark.parametrize("xs, dtype", [
    (np.ones((3, 2, D), dtype=np.int64), np.float64),  # integers: the cell's float type
    (np.ones((3, 2, D), dtype=np.float16), np.float32),
    (np.ones((3, 2, D), dtype=bool), np.float64),
])
def test_other_arrays_take_the_general_path(xs, dtype):
    net = ug.unroll(ug.nn.RNNCell(D, H, seed=0), steps=3)
    out, _ = net(xs)
    assert net.last_run.xs["x"].dtype == dtype
    with pytest.raises(ug.DTypeError, match="complex"):
        net(xs.astype(np.complex128))


def test_a_float64_array_for_a_float32_cell_is_refused_as_before():
    net = ug.unroll(ug.nn.RNNCell(D, H, seed=0, dtype=np.float32), steps=3)
    with pytest.raises(ug.DTypeError, match="float64"):
        net(np.zeros((3, 2, D)))


@SETTINGS
@given(kind=st.sampled_from(sorted(CELLS)), dtype=st.sampled_from([np.float64, np.float32]),
       B=st.integers(1, 3), T=st.integers(1, 5),
       options=st.sampled_from([{}, {"keep": "all"}, {"truncate": 2}, {"checkpoint": 2}]),
       seed=st.integers(0, 9))
def test_the_joined_outputs_are_the_stacked_per_step_values(kind, dtype, B, T, options, seed):
    cell = CELLS[kind](D, H, seed=seed, dtype=dtype)
    net = ug.unroll(cell, steps=T, **options)
    xs = np.random.default_rng(seed).normal(size=(T, B, D)).astype(dtype)
    out, final = net(xs)
    run = net.last_run
    for t in [out] + _finals(final):
        assert not t.data.flags.writeable
    if type(run).stacked_outputs is run_module.Run.stacked_outputs:
        want = run.stacked_outputs()[0]
        assert out.data.dtype == want.dtype and out.data.shape == want.shape
        np.testing.assert_array_equal(out.data, want)
    # the same numbers as the generic loop's (detect_anomaly: the rows are stacked)
    with ug.detect_anomaly():
        again, _ = net(xs)
    np.testing.assert_allclose(again.data, out.data, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_rows_the_join_cannot_take_are_stacked():
    rows = tuple(np.arange(8.0).reshape(2, 4)[:, ::2][None] + k for k in range(3))  # strided
    got = run_module._stacked_read_only(rows, None, False)
    np.testing.assert_array_equal(got, np.stack(rows))
    assert not got.flags.writeable
    base = np.arange(12.0).reshape(3, 1, 4).copy()  # rows of one array: a view, no copy
    got = run_module._stacked_read_only(tuple(base[k] for k in range(3)), None, False)
    assert np.shares_memory(got, base) and not got.flags.writeable


@pytest.mark.parametrize("size", [(3, 2), (80, 64)])  # ones written out, ones broadcast
@pytest.mark.parametrize("edit", ["setitem", "edit", "iadd"])
def test_a_leaf_whose_value_a_gradient_views_is_copied_before_an_edit_in_place(size, edit):
    T, B = size
    cell = ug.nn.RNNCell(D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    xs = np.random.default_rng(0).normal(size=(T, B, D))
    G = ug.tensor(np.random.default_rng(1).normal(size=(T, B, H)), name="G")
    out, _ = net(xs)
    (out * G).sum().backward()
    out_grad = out.grad.copy()
    states = net.last_run.state_grads().copy()
    w = cell.weight_hh.grad.copy()
    assert np.shares_memory(out.grad, G.data)  # (the view: no copy of G)
    if edit == "setitem":
        G[-1] = 100.0
    elif edit == "edit":
        with G.edit() as a:
            a *= 3.0
    else:
        with ug.no_grad():
            G += 1.0
    np.testing.assert_array_equal(out.grad, out_grad)
    np.testing.assert_array_equal(net.last_run.state_grads(), states)
    # the edit itself took: the next step computes with the new G
    cell.zero_grad()
    out, _ = net(xs)
    (out * G).sum().backward()
    assert not np.array_equal(cell.weight_hh.grad, w)
    cell.zero_grad()
    out, _ = net(xs)
    (out * ug.tensor(G.data.copy())).sum().backward()
    w_new = cell.weight_hh.grad.copy()
    cell.zero_grad()
    out, _ = net(xs)
    (out * G).sum().backward()
    np.testing.assert_array_equal(cell.weight_hh.grad, w_new)


def test_a_detached_tensor_keeps_its_record_when_its_lent_source_is_copied():
    cell = ug.nn.RNNCell(D, H, seed=0)
    net = ug.unroll(cell, steps=3)
    G = ug.tensor(np.ones((3, 2, H)), name="G")
    d = G.detach()
    out, _ = net(np.zeros((3, 2, D)))
    (out * G).sum().backward()
    G[0] = 5.0  # G gets memory of its own; d keeps the old numbers, as after G.data = ...
    assert float(G.data[0, 0, 0]) == 5.0 and float(d.data[0, 0, 0]) == 1.0


@pytest.mark.parametrize("T, B", [(3, 2), (80, 64)])  # ones kept, ones broadcast
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_shared_ones_of_the_loss_cannot_be_written(T, B, dtype):
    net = ug.unroll(ug.nn.RNNCell(D, H, seed=0, dtype=dtype), steps=T)
    xs = np.random.default_rng(0).normal(size=(T, B, D)).astype(dtype)
    for _ in range(2):
        out, _ = net(xs)
        prod = out * ug.tensor(np.ones((T, B, H), dtype))
        loss = prod.sum()
        loss.backward()
        for g in (loss.grad, prod.grad):
            assert g.dtype == dtype and not g.flags.writeable and np.all(g == 1)
            with pytest.raises(ValueError):
                g.setflags(write=True)  # (on immutable memory: shared by every such loss)
    ones = walk._ones((T, B, H), np.dtype(dtype))
    assert ones.dtype == dtype and ones.shape == (T, B, H) and np.all(ones == 1)
    with pytest.raises(ValueError):
        ones[...] = 0


def test_the_loss_sum_is_numpys():
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for a in (rng.normal(size=(7, 3, 5)).astype(dtype),
                  rng.normal(size=(300, 7)).astype(dtype).T,  # (not contiguous)
                  rng.normal(size=(50, 40, 3)).astype(dtype)[::2, :, 1]):
            t = ug.tensor(a)
            if not a.flags.c_contiguous:
                t = ug.transpose(ug.tensor(a.T.copy())) if a.ndim == 2 else t
            s = t.sum()
            assert s.data.dtype == dtype and s.data.shape == ()
            assert s.data.tobytes() == np.asarray(t.data.sum()).tobytes()
    with pytest.raises(ug.DTypeError):
        ug.tensor([1.0]) * "a"
    assert (2 * ug.tensor([1.0, 2.0])).data.tolist() == [2.0, 4.0]
    assert (ug.tensor([1.0, 2.0]) - np.array([1, 1])).data.tolist() == [0.0, 1.0]


def test_a_leaf_gradient_of_the_wrong_shape_is_refused_before_any_is_stored(monkeypatch):
    cell = ug.nn.RNNCell(D, H, seed=0)
    net = ug.unroll(cell, steps=3)
    out, _ = net(np.zeros((3, 2, D)))
    loss = (out * ug.tensor(np.ones((3, 2, H)))).sum()
    real = run_module.Run.leaf_grads

    def wrong_last(self, seeds):
        per = list(real(self, seeds))
        per[-1] = np.zeros(7)  # (the last parameter's)
        return per

    monkeypatch.setattr(run_module.Run, "leaf_grads", wrong_last)
    with pytest.raises(ug.GraphError, match=r"input 4 .*returned a gradient of shape \(7,\)"):
        loss.backward()
    assert all(p.grad is None for p in cell.parameters().values())
