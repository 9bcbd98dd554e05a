"""The forward pass multiplies by row-major copies of the transposed weights.

A step's ``h @ W_hh.T`` reads the view ``W_hh.T`` (column-major); BLAS multiplies by a
row-major copy of it faster, and may sum in another order for the other layout, so the two
products can differ in the last bit. Both executors (the compiled steps and the reference
walk that ``detect_anomaly()`` runs) multiply by the copy in a run of more than one sequence:
they must agree bit for bit. A run of one sequence keeps the views (it gains nothing), and
the run's values afterwards are the views again (what the backward pass and ``Run.value``
read). Likewise a bias that the steps only add (``b_hh``) is added as a copy broadcast to
the batch: the same sums, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.run import row_major_operands

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
T = 5
# (batch, inputs, hidden): sizes where this machine's BLAS sums a product by W.T in another
# order than by its row-major copy are found among these (see _layouts_differ)
CANDIDATES = [(2, 16, 16), (3, 17, 12), (2, 33, 9), (4, 16, 33), (5, 40, 24), (8, 64, 32)]


def _layouts_differ(kind, B, D, H) -> bool:
    """Whether ``h @ W.T`` and ``h @ (row-major copy of W.T)`` differ in a bit for this
    cell's weights at these sizes."""
    cell = CELLS[kind](D, H, seed=0)
    rng = np.random.default_rng(5)
    for name, rows in (("weight_ih", D), ("weight_hh", H)):
        w = cell.parameters()[name].data
        a = rng.normal(size=(B, rows))
        if not np.array_equal(a @ w.T, a @ np.ascontiguousarray(w.T)):
            return True
    return False


def _sizes(kind):
    found = [s for s in CANDIDATES if _layouts_differ(kind, *s)]
    if not found:
        pytest.skip("this BLAS sums both layouts in the same order at the sizes tried")
    return found[0]


def _step(cell, net, xs, G, anomaly):
    cell.zero_grad()
    if anomaly:
        with ug.detect_anomaly():
            out, final = net(xs)
            (out * ug.tensor(G)).sum().backward()
    else:
        out, final = net(xs)
        (out * ug.tensor(G)).sum().backward()
    finals = [final] if isinstance(final, ug.Tensor) else list(final)
    got = {"out": out.data.copy()}
    got.update({f"final {k}": f.data.copy() for k, f in enumerate(finals)})
    got.update({k: p.grad.copy() for k, p in cell.parameters().items()})
    return got


@pytest.mark.parametrize("keep", ["needed", "all"])
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_compiled_steps_and_reference_walk_agree_bit_for_bit(kind, keep):
    B, D, H = _sizes(kind)
    cell = CELLS[kind](D, H, seed=0)
    rng = np.random.default_rng(1)
    xs = ug.tensor(rng.normal(size=(T, B, D)))
    G = rng.normal(size=(T, B, H))
    net = ug.unroll(cell, steps=T, keep=keep)
    assert net._row_major  # (the transposed weights are read only as right operands)
    fast = _step(cell, net, xs, G, anomaly=False)
    assert not net.last_run.generic_forward
    ref = _step(cell, ug.unroll(cell, steps=T, keep=keep), xs, G, anomaly=True)
    for k in fast:
        np.testing.assert_array_equal(fast[k], ref[k], err_msg=k, strict=True)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_the_runs_values_are_the_views_again(kind):
    B, D, H = 3, 4, 5
    cell = CELLS[kind](D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    out, _ = net(ug.tensor(np.random.default_rng(1).normal(size=(T, B, D))))
    out.sum().backward()
    run = net.last_run
    for s in net._row_major:
        v = run.values[s]
        assert not v.flags.c_contiguous  # the transpose's own value: a view of the weight
        assert any(np.shares_memory(v, p.data) for p in cell.parameters().values())


def test_a_run_of_one_sequence_multiplies_by_the_views():
    """Batch 1: the products are of one row (BLAS's matrix-vector product, whose order
    depends on the layout): the steps give what the eager equations give, bit for bit."""
    cell = ug.nn.RNNCell(16, 16, seed=0)
    xs = np.random.default_rng(1).normal(size=(T, 1, 16))
    out, _ = ug.unroll(cell, steps=T)(ug.tensor(xs))
    p = {k: v.data for k, v in cell.parameters().items()}
    h = np.zeros((1, 16))
    for t in range(T):
        h = np.tanh((xs[t] @ p["weight_ih"].T + p["bias_ih"]) + (h @ p["weight_hh"].T
                                                                  + p["bias_hh"]))
        np.testing.assert_array_equal(out.data[t], h, strict=True)


def test_row_major_operands_swaps_column_major_matrices_only():
    w = np.arange(6.0).reshape(2, 3)
    vals = [w.T, w, np.arange(3.0)]
    kept = row_major_operands((0, 1, 2), vals)
    assert [s for s, _ in kept] == [0]
    assert np.shares_memory(kept[0][1], w) and vals[0].flags.c_contiguous
    assert np.array_equal(vals[0], w.T) and vals[1] is w


# -- biases broadcast to the batch ---------------------------------------------------------


@pytest.mark.parametrize("keep", ["needed", "all"])
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_a_bias_added_as_a_batch_sized_copy_gives_the_same_bits(kind, keep):
    """The steps add ``b_hh`` as a copy broadcast to (B, H): the same sums, number for
    number, as adding the (H,) vector; the backward pass and the run's values see the
    parameter itself again."""
    B, D, H = 3, 4, 5
    rng = np.random.default_rng(2)
    xs = ug.tensor(rng.normal(size=(T, B, D)))
    G = rng.normal(size=(T, B, H))
    got = {}
    for tag in ("copy", "vector"):
        cell = CELLS[kind](D, H, seed=0)
        net = ug.unroll(cell, steps=T, keep=keep)
        assert [net.nodes[s].name for s, _ in net._broadcast] == ["bias_hh"]
        if tag == "vector":
            net._broadcast = ()
        got[tag] = _step(cell, net, xs, G, anomaly=False)
        run = net.last_run
        (s, _reader), = ug.unroll(cell, steps=T)._broadcast
        assert run.values[s] is cell.parameters()["bias_hh"].data  # (put back)
    for k in got["copy"]:
        np.testing.assert_array_equal(got["copy"][k], got["vector"][k], err_msg=k, strict=True)


def test_a_bias_read_otherwise_is_not_broadcast():
    """Only a value that the steps read as an add's operand alone is broadcast: a bias that
    a step also multiplies by keeps its shape; one only added is broadcast."""
    for times, want in ((True, []), (False, ["b"])):
        cell = ug.Cell("c")
        x = cell.input("x", (3,))
        h = cell.state("h", (3,))
        b = cell.param("b", np.ones(3))
        h_next = ug.tanh(x + h + b)
        cell.feedback(h, h_next * b if times else h_next)
        cell.output("y", h_next)
        net = ug.unroll(cell, steps=3)
        assert [net.nodes[s].name for s, _ in net._broadcast] == want
        out, _ = net(np.ones((3, 2, 3)))
        assert out.shape == (3, 2, 3)
