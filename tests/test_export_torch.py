"""A cell lowered to PyTorch (``ug.export.to_torch``) computes what the unrolled net computes.

For the ready cells (one layer and stacked) and for random cells drawn from every op of the
registry (the generator of ``test_differential``), the module's outputs, final states and the
gradients of every parameter, the inputs and the initial state equal unrollgraph's in float64
to 1e-10 of each array's largest magnitude, with full and truncated BPTT and variable lengths.
Every op's rule is also checked alone (forward and VJP) on the cases of ``test_ops``, which
include the losses a cell cannot hold. Weights come back bit for bit; an op without a rule is
named; ``import unrollgraph`` imports neither torch nor onnx.
"""

from __future__ import annotations

import io
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph import ops as ops_module
from unrollgraph.ops import get_op, registry
from unrollgraph.tensor import apply

torch = pytest.importorskip("torch")

from test_differential import build_cell, cells  # noqa: E402  (after the import check)
from test_ops import BUILDERS, PLUMBING  # noqa: E402

# the random cells may declare a state their graph never reads (a legitimate cell: it carries
# a value out as the final state); unroll tells a user so with a CellWarning, which these
# tests of the arithmetic do not check (tests/test_user_trial_cells.py does)
pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-10


def close(got, want, what):
    """``got`` equals ``want`` to RTOL of ``want``'s largest magnitude (``None`` = zeros)."""
    want = np.zeros(np.shape(got)) if want is None else np.asarray(want)
    if isinstance(got, torch.Tensor):
        got = got.detach().cpu().numpy()
    got = np.zeros_like(want) if got is None else np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = float(np.max(np.abs(want), initial=0.0))
    err = float(np.max(np.abs(got - want), initial=0.0))
    assert err <= RTOL * scale or err == 0.0, f"{what}: off by {err:.3g} (scale {scale:.3g})"


def _as_list(x):
    if isinstance(x, dict):
        return list(x.values())
    return list(x) if isinstance(x, tuple) else [x]


def compare(cell, xs, h0s=None, truncate=None, lengths=None, seed=0):
    """Run ``cell`` in unrollgraph and as a torch module on the same data, backpropagate the
    same random weighting of every output and final state, and compare everything."""
    rng = np.random.default_rng(seed)
    T = next(iter(xs.values())).shape[0]
    net = ug.unroll(cell, steps=T, truncate=truncate)
    cell.zero_grad()
    uxs = {k: ug.tensor(v, requires_grad=True) for k, v in xs.items()}
    uh0 = None if h0s is None else tuple(ug.tensor(h, requires_grad=True) for h in h0s)
    outs, fins = net(uxs, state=uh0, lengths=lengths)
    outs, fins = _as_list(outs), _as_list(fins)
    seeds_o = [rng.standard_normal(o.shape) for o in outs]
    seeds_f = [rng.standard_normal(f.shape) for f in fins]
    loss = sum((o * s).sum() for o, s in zip(outs, seeds_o))
    loss = loss + sum((f * s).sum() for f, s in zip(fins, seeds_f))
    loss.backward()

    module = ug.export.to_torch(cell)
    txs = {k: torch.tensor(v, requires_grad=True) for k, v in xs.items()}
    th0 = None if h0s is None else tuple(torch.tensor(h, requires_grad=True) for h in h0s)
    touts, tfins = module(txs, state=th0, lengths=lengths, truncate=truncate)
    touts, tfins = _as_list(touts), _as_list(tfins)
    tloss = sum((o * torch.from_numpy(s)).sum() for o, s in zip(touts, seeds_o))
    tloss = tloss + sum((f * torch.from_numpy(s)).sum() for f, s in zip(tfins, seeds_f))
    if tloss.requires_grad:
        tloss.backward()
    tag = f"{cell.name} T={T} truncate={truncate} lengths={lengths}"
    for k, (a, b) in enumerate(zip(touts, outs)):
        assert a.dtype == torch.float64
        close(a, b.data, f"{tag}: output {k}")
    for k, (a, b) in enumerate(zip(tfins, fins)):
        close(a, b.data, f"{tag}: final state {k}")
    named = dict(module.named_parameters())
    for k, p in cell.parameters().items():
        close(named[module.torch_names[k]].grad, p.grad, f"{tag}: {k}.grad")
    for k in xs:
        close(txs[k].grad, uxs[k].grad, f"{tag}: xs[{k!r}].grad")
    for k, (a, b) in enumerate(zip(th0 or (), uh0 or ())):
        close(a.grad, b.grad, f"{tag}: initial state {k} grad")
    return module


READY = {
    "rnn_tanh": lambda: ug.nn.RNNCell(3, 4, seed=0),
    "rnn_relu": lambda: ug.nn.RNNCell(3, 4, nonlinearity="relu", seed=1),
    "lstm": lambda: ug.nn.LSTMCell(3, 4, seed=2),
    "gru": lambda: ug.nn.GRUCell(3, 4, seed=3),
    "residual": lambda: ug.nn.ResidualRNNCell(3, 4, hh_scale=0.5, seed=4),
    "stacked_rnn": lambda: ug.nn.RNN(3, 4, num_layers=2, seed=5),
    "stacked_lstm": lambda: ug.nn.LSTM(3, 4, num_layers=3, seed=6),
    "stacked_gru": lambda: ug.nn.GRU(3, 4, num_layers=2, seed=7),
}
RUNS = {"full": (None, None), "truncated": (3, None), "lengths": (None, [7, 0, 4]),
        "truncated_lengths": (2, [7, 5, 1])}


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("kind", READY)
def test_ready_cells_match_unrollgraph(kind, run):
    cell = READY[kind]()
    rng = np.random.default_rng(len(kind))
    xs = {"x": rng.standard_normal((7, 3, 3))}
    h0s = [rng.standard_normal((3,) + t.shape[1:]) for t in cell.states.values()]
    truncate, lengths = RUNS[run]
    compare(cell, xs, h0s, truncate=truncate, lengths=lengths)
    if run == "full":  # the cell's own initial state (zeros) too
        compare(cell, xs, None)


@settings(max_examples=100, deadline=None)
@given(spec=cells(), data=st.data())
def test_random_cells_match_unrollgraph(spec, data):
    compare(*random_case(spec, data, max_batch=3))


def random_case(spec, data, max_batch: int) -> tuple:
    """A random cell of ``spec`` with its inputs, initial states and run options, drawn
    from ``data``: ``(cell, xs, h0s, truncate, lengths, seed)``."""
    T = data.draw(st.integers(1, 5), label="T")
    B = data.draw(st.integers(1, max_batch), label="B")
    truncate = data.draw(st.none() | st.integers(1, T + 1), label="truncate")
    lengths = data.draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B),
                        label="lengths")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    values = {k: rng.uniform(-0.6, 0.6, shp) for k, shp in spec["params"].items()}
    cell = build_cell(spec, values)
    xs = {f"x{k}": rng.uniform(-1, 1, (T, B, d)) for k, d in enumerate(spec["in"])}
    h0s = [rng.uniform(-1, 1, (B, d)) for d in spec["st"]]
    return cell, xs, h0s, truncate, None if lengths is None else np.array(lengths), seed


# ops that reduce over the whole batch (a loss): a cell refuses them (they would mix the
# sequences of a batch); checked alone below. ``item``/``unrolled``: plumbing of eager calls.
NOT_IN_CELLS = {"mse_loss", "cross_entropy", "binary_cross_entropy_with_logits"} | PLUMBING


def every_op_cell():
    """One cell using every op a cell can hold, each at least once, with the attributes
    (axis, keepdims, index, shape, axes, exponents, bounds) in several forms."""
    rng = np.random.default_rng(0)
    cell = ug.Cell("every_op")
    x = cell.input("x", (3,))
    h = cell.state("h", (4,))
    c = cell.state("c", (4,), init=np.array([0.1, -0.2, 0.3, 0.0]))
    W = cell.param("W", rng.uniform(-0.5, 0.5, (4, 3)))
    U = cell.param("U", rng.uniform(-0.5, 0.5, (4, 4)))
    b = cell.param("b", rng.uniform(-0.5, 0.5, 4))
    v = cell.param("v", rng.uniform(0.5, 1.5, 4))
    pre = x @ W.T + h @ U.transpose(1, 0) - b                 # matmul, transpose, add, sub
    a = ug.tanh(pre) * ug.sigmoid(-pre) / (1.0 + pre * pre)  # tanh, sigmoid, neg, mul, div
    pos = ug.sqrt(pre * pre + 0.5) ** 1.5 + ug.exp(ug.clip(pre, -1.0, None))  # sqrt powc exp
    g = ug.log(pos) + ug.relu(pre) - ug.abs(c) ** 2 + (pos ** ug.tanh(c))  # log relu abs pow
    m = ug.maximum(a, c) - ug.minimum(g, 0.3) + ug.clip(h, hi=0.5)
    cond = (a > 0.0) * 0.5 + (a >= c) + (a < g) * 0.25 + (g <= 0.1)   # gt ge lt le
    s = ug.where(a > 0.1, m, g) + cond                     # where
    red = (ug.sum(s, axis=1, keepdims=True) + ug.mean(s, axis=-1, keepdims=True)
           + ug.max(s, axis=1).reshape(-1, 1))            # sum mean max reshape
    parts = ug.concat([s[:, 0:2], s[:, ::-1][:, 2:], s[:, [3, 3]][:, :0]], axis=1)  # getitem
    st = ug.stack([parts, m * v], axis=1)                  # stack (B, 2, 4)
    mix = ug.softmax(st, axis=-1)[:, 0] + ug.log_softmax(st, axis=2)[:, 1]   # softmax...
    h_next = ug.tanh(mix * 0.5 + red * 0.1 + st.transpose(0, 2, 1)[:, :, 1] * 0.2)
    h_next.name = "h_next"
    c_next = ug.tanh(c * v + h_next - s[:, 1].reshape(-1, 1) * 0.1)
    cell.feedback(h, h_next)
    cell.feedback(c, c_next)
    cell.output("y", h_next)
    cell.output("prev_c", c)
    return cell


def test_a_cell_with_every_op_matches_unrollgraph():
    cell = every_op_cell()
    used = {n.op for n in cell.graph().nodes if not n.is_leaf}
    assert used == set(registry()) - NOT_IN_CELLS, "every_op_cell lacks an op of the registry"
    rng = np.random.default_rng(1)
    xs = {"x": rng.uniform(-1, 1, (6, 3, 3))}
    h0s = [rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, (3, 4))]
    for truncate, lengths in [(None, None), (2, None), (None, [6, 0, 3]), (4, [6, 5, 1])]:
        compare(cell, xs, h0s, truncate=truncate, lengths=lengths)
    compare(cell, xs, None)


# -- every op's rule alone ------------------------------------------------------------------


def test_every_op_a_cell_can_hold_has_a_torch_rule():
    """Only the plumbing op of an eager call of an unrolled net (never inside a cell) has
    none; ``docs/export.md`` lists them all."""
    missing = {name for name, op in registry().items() if "torch" not in op.lower}
    assert missing == {"unrolled"}


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - PLUMBING))
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_each_rule_computes_the_numpy_forward_and_its_vjps(name, data):
    op = get_op(name)
    rule = op.lowering("torch")
    case = data.draw(BUILDERS[name](name))
    args = [np.asarray(a) if k in case.const else np.asarray(a, dtype=np.float64)
            for k, a in enumerate(case.args)]
    ans = np.asarray(op.forward(*args, **case.attrs))
    targs = [torch.from_numpy(a.copy()) if k in case.const
             else torch.tensor(a, requires_grad=True) for k, a in enumerate(args)]
    out = rule(torch, *targs, **case.attrs)
    assert out.dtype == torch.float64, name
    close(out, ans, f"{name} forward")
    diff = [k for k in case.diff if k not in op.nondiff]
    if not diff:  # a comparison: no gradient at all
        assert not out.requires_grad
        return
    g = np.random.default_rng(0).standard_normal(ans.shape)
    got = torch.autograd.grad(out, [targs[k] for k in diff], torch.from_numpy(g),
                              allow_unused=True)
    want = op.vjp(g, ans, *args, **case.attrs)
    for k, gk in zip(diff, got):
        close(gk, want[k], f"{name} gradient of input {k}")


def test_rules_keep_float32():
    cell = ug.nn.GRU(2, 3, num_layers=2, seed=0, dtype=np.float32)
    module = ug.export.to_torch(cell)
    assert all(p.dtype == torch.float32 for p in module.parameters())
    xs = np.random.default_rng(0).standard_normal((5, 2, 2)).astype(np.float32)
    out, _ = module(torch.from_numpy(xs))
    want, _ = ug.unroll(cell, 5)(xs)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), want.data, rtol=1e-5, atol=1e-6)


# -- an op without a rule --------------------------------------------------------------------


def test_an_op_without_a_torch_rule_is_named_and_deflower_fixes_it():
    name = "softsign_export_test"
    ops_module.defop(name, lambda a: a / (1.0 + np.abs(a)),
                     [lambda g, ans, a: g / (1.0 + np.abs(a)) ** 2])
    try:
        cell = ug.Cell("soft")
        x = cell.input("x", (2,))
        h = cell.state("h", (2,))
        w = cell.param("w", np.array([[0.5, -0.2], [0.1, 0.3]]))
        from unrollgraph.tensor import apply

        h_next = apply(name, x + h @ w, name="h_next")
        cell.feedback(h, h_next)
        cell.output("y", h_next)
        with pytest.raises(ug.LoweringError, match=f"op '{name}' \\(node h_next\\)") as err:
            ug.export.to_torch(cell)
        assert err.value.op == name and err.value.target == "torch"
        assert "deflower" in str(err.value)
        ops_module.deflower(name, "torch", lambda torch, a: a / (1.0 + torch.abs(a)))
        rng = np.random.default_rng(0)
        compare(cell, {"x": rng.standard_normal((4, 2, 2))}, [rng.standard_normal((2, 2))],
                truncate=2)
    finally:
        ops_module._REGISTRY.pop(name, None)
    assert name not in registry()


def test_a_failing_rule_names_the_op_the_node_and_the_step():
    name = "broken_export_test"
    ops_module.defop(name, lambda a: a * 1.0, [lambda g, ans, a: g],
                     torch=lambda torch, a: a.reshape(7, 7))
    try:
        cell = ug.Cell("broken")
        x = cell.input("x", (2,))
        h = cell.state("h", (2,))
        from unrollgraph.tensor import apply

        cell.feedback(h, apply(name, x + h, name="nxt"))
        cell.output("y", h)
        module = ug.export.to_torch(cell)
        with pytest.raises(ug.LoweringError, match=r"step 0: the torch rule of op "
                                                   rf"'{name}' \(node nxt\)"):
            module(torch.zeros(3, 1, 2, dtype=torch.float64))
    finally:
        ops_module._REGISTRY.pop(name, None)


# -- weights back, names, the one-step form --------------------------------------------------


def _bits(a) -> bytes:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return a.dtype.str.encode() + a.tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weights_round_trip_bit_for_bit(dtype):
    cell = ug.nn.LSTM(2, 3, num_layers=2, seed=0, dtype=dtype)
    before = {k: _bits(v) for k, v in cell.state_dict().items()}
    module = ug.export.to_torch(cell)
    for k in cell.parameters():
        assert _bits(module.get_parameter(k)) == before[k]
    opt = torch.optim.Adam(module.parameters(), lr=0.01)  # train: every weight moves
    for _ in range(3):
        opt.zero_grad()
        out, _ = module(torch.randn(4, 2, 2, dtype=module.weight_ih_l0.dtype))
        out.square().mean().backward()
        opt.step()
    assert ug.export.from_torch(module, cell) is cell
    for k, p in cell.parameters().items():
        assert _bits(p.data) == _bits(module.get_parameter(k)) != before[k]
        assert p.data.dtype == dtype
    other = READY["stacked_lstm"]()  # the other door: a plain state dict
    twin = ug.nn.LSTM(2, 3, num_layers=2, seed=9, dtype=dtype)
    twin.load_state_dict(module.state_dict())
    assert all(_bits(twin.state_dict()[k]) == _bits(v) for k, v in cell.state_dict().items())
    with pytest.raises(ug.CellError, match="missing"):
        ug.export.from_torch(module, other)


def test_a_torch_rnn_cell_state_dict_loads_through_from_torch():
    tc = torch.nn.GRUCell(3, 4).double()
    cell = ug.export.from_torch(tc, ug.nn.GRUCell(3, 4, seed=0))
    xs = torch.randn(5, 2, 3, dtype=torch.float64)
    h = torch.zeros(2, 4, dtype=torch.float64)
    for x in xs:
        h = tc(x, h)
    out, last = ug.unroll(cell, 5)(xs.numpy())
    close(h, last.data, "torch.nn.GRUCell against the loaded cell")


def test_names_torch_cannot_hold_are_mapped_reversibly():
    cell = ug.Cell("names")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    odd = ["layer.0.weight", "100%", "forward", "%2E", "step", "a b"]
    params = {k: cell.param(k, np.full((2,), 0.1 * (j + 1))) for j, k in enumerate(odd)}
    scale = 1.0 / len(odd)
    acc = x + h * 0.5
    for p in params.values():
        acc = acc + ug.tanh(acc * p) * scale
    cell.feedback(h, ug.tanh(acc, name="h_next"))
    cell.output("y", h)
    module = ug.export.to_torch(cell)
    names = dict(module.named_parameters())
    assert set(names) == set(module.torch_names.values())
    assert module.torch_names["layer.0.weight"] == "layer%2E0%2Eweight"
    assert module.torch_names["100%"] == "100%25"
    assert module.torch_names["forward"] == "%_forward"
    assert module.torch_names["%2E"] == "%252E"
    assert module.torch_names["a b"] == "a b"
    assert len(set(module.torch_names.values())) == len(odd)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(3.0)
    ug.export.from_torch(module, cell)
    for j, k in enumerate(odd):
        np.testing.assert_array_equal(cell.parameters()[k].data,
                                      np.full((2,), 0.1 * (j + 1)) * 3.0)
    assert callable(module.forward) and callable(module.step)
    compare(cell, {"x": np.random.default_rng(0).standard_normal((3, 2, 2))}, truncate=2)


def _named_cell(names):
    cell = ug.Cell("named")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    acc = x + h * 0.5
    for j, k in enumerate(names):
        acc = acc + ug.tanh(acc * cell.param(k, np.full((2,), 0.1 * (j + 1)))) * 0.1
    cell.feedback(h, ug.tanh(acc, name="h_next"))
    cell.output("y", h)
    return cell


def test_a_saved_state_dict_loads_back_whatever_its_names(tmp_path):
    """``module.state_dict()`` (and what ``torch.load`` gives back of it) holds the module's
    names (``layer%2E0%2EW``, ``%_forward``): from_torch maps them back, and takes the cell's
    own names too; a name that is neither is refused, pointing at ``module.torch_names``."""
    cell = _named_cell(["layer.0.W", "bias.x", "forward"])
    module = ug.export.to_torch(cell)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(-2.0)
    want = {k: module.get_parameter(t).detach().numpy().copy()
            for k, t in module.torch_names.items()}
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    for sd in (module.state_dict(), torch.load(tmp_path / "weights.pt"),
               {k: v.numpy() for k, v in module.state_dict().items()},
               module.cell_state_dict(), {k: np.asarray(v) for k, v in want.items()}):
        fresh = _named_cell(["layer.0.W", "bias.x", "forward"])
        assert ug.export.from_torch(sd, fresh) is fresh
        for k, v in want.items():
            assert _bits(fresh.parameters()[k].data) == _bits(v), k
    sd = dict(module.state_dict())
    sd["layer%2E1%2EW"] = sd.pop("layer%2E0%2EW")
    with pytest.raises(ug.CellError, match=r"unknown names \['layer%2E1%2EW'\]; missing "
                       r"\['layer.0.W'\].*module.torch_names") as err:
        ug.export.from_torch(sd, cell)
    assert "e.g. 'layer.0.W' to 'layer%2E0%2EW'" in str(err.value)


def test_a_name_that_reads_both_ways_is_settled_by_the_whole_dict():
    """``a%2Eb`` is a cell name and the module's name of ``a.b``: a dict named wholly one
    way (the cell's or the module's) is read that way; a partial dict where it could be
    either is refused, not guessed."""
    names = ["a.b", "a%2Eb", "c"]
    cell = _named_cell(names)
    module = ug.export.to_torch(cell)
    assert module.torch_names == {"a.b": "a%2Eb", "a%2Eb": "a%252Eb", "c": "c"}
    with torch.no_grad():
        for j, p in enumerate(module.parameters()):
            p.fill_(j + 5.0)
    own = module.cell_state_dict()
    for sd in (module.state_dict(), own):
        fresh = _named_cell(names)
        ug.export.from_torch(sd, fresh)
        for k in names:
            assert _bits(fresh.parameters()[k].data) == _bits(own[k])
    with pytest.raises(ug.CellError, match="ambiguous names 'a%2Eb'"):
        ug.export.from_torch({"a%2Eb": own["a.b"], "c": own["c"]}, cell)
    with pytest.raises(ug.CellError, match="clash: 'a.b' and 'a%2Eb' both give 'a.b'"):
        ug.export.from_torch({"a.b": own["a.b"], "a%2Eb": own["a.b"], "c": own["c"]},
                             _named_cell(["a.b", "c"]))


NAME_CHARS = st.sampled_from(list("ab_.%2E5") + ["%2E", "%25", "%_"])


@settings(max_examples=15, deadline=None)
@given(names=st.lists(st.one_of(
    st.lists(NAME_CHARS, min_size=1, max_size=5).map("".join),
    st.sampled_from(["forward", "step", "training", "cuda", "%_forward", "_x"])),
    min_size=1, max_size=4, unique=True))
def test_any_parameter_names_round_trip_through_the_module_state_dict(names):
    cell = _named_cell(names)
    module = ug.export.to_torch(cell)
    assert len(set(module.torch_names.values())) == len(names)
    with torch.no_grad():
        for j, p in enumerate(module.parameters()):
            p.fill_(j + 1.5)
    for sd in (module.state_dict(), module.cell_state_dict()):
        fresh = _named_cell(names)
        ug.export.from_torch(dict(sd), fresh)
        for k, t in module.torch_names.items():
            assert _bits(fresh.parameters()[k].data) == _bits(module.get_parameter(t)), k


def test_step_speaks_of_one_steps_shapes():
    """``module.step(x)`` says what a step takes, ``(B, ...)``, and the shape passed, not the
    sequence form it uses inside; ``module(xs)`` says ``(T, B, ...)``."""
    lm = ug.export.to_torch(ug.nn.LSTMCell(3, 4, seed=0))
    f64 = torch.float64
    for x in (torch.randn(4, 2, 3, dtype=f64), torch.randn(3, dtype=f64),
              torch.randn(2, 5, dtype=f64)):
        with pytest.raises(ug.ShapeError) as err:
            lm.step(x)
        msg = str(err.value)
        assert f"step: x must have shape (B, 3), got {tuple(x.shape)};" in msg, msg
        assert "(T, B, 3)" not in msg and "(1, " not in msg
    with pytest.raises(ug.ShapeError, match=r"step: state 'c' must have shape \(2, 4\).*"
                       r"got \(3, 4\)"):
        lm.step(torch.randn(2, 3, dtype=f64), (torch.zeros(2, 4, dtype=f64),
                                               torch.zeros(3, 4, dtype=f64)))
    with pytest.raises(ug.DTypeError, match="x must be a tensor or an array of real numbers, "
                                            "got str"):
        lm.step("abc")
    with pytest.raises(ug.CellError, match=r"step: x has inputs \['u'\]"):
        lm.step({"u": torch.zeros(2, 3, dtype=f64)})
    counter = ug.Cell("counter")
    c = counter.state("c", (2,))
    counter.feedback(c, ug.tanh(c + 1.0))
    counter.output("y", c)
    m = ug.export.to_torch(counter)
    with pytest.raises(ug.CellError, match=r"has no inputs; leave x out: module.step\(state="):
        m.step(torch.zeros(1, 2, dtype=f64))
    y, c1 = m.step(None, torch.zeros(3, 2, dtype=f64))
    assert tuple(y.shape) == (3, 2)
    with pytest.raises(ug.ShapeError, match=r"state 'c' must have shape \(B, 2\).*got \(2,\)"):
        m(None, state=torch.zeros(2, dtype=f64), steps=2)
    two = ug.Cell("two")
    a, b = two.input("a", (2,)), two.input("b", (3,))
    s = two.state("s", (2,))
    two.feedback(s, ug.tanh(a + s + ug.sum(b, axis=1, keepdims=True)))
    two.output("y", s)
    m2 = ug.export.to_torch(two)
    with pytest.raises(ug.ShapeError, match=r"step: the inputs disagree on the batch size: "
                       r"x\['a'\] has 2, x\['b'\] has 4"):
        m2.step({"a": torch.zeros(2, 2, dtype=f64), "b": torch.zeros(4, 3, dtype=f64)})
    with pytest.raises(ug.CellError, match=r"pass x as a dict name -> tensor shaped \(B, ...\)"):
        m2.step(torch.zeros(2, 2, dtype=f64))


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple),
       one_step=st.booleans())
def test_a_wrong_shape_is_reported_as_passed(shape, one_step):
    """Whatever the shape, a refused input is reported with the shape the caller passed and
    the form of the call (``(B, 3)`` for step, ``(T, B, 3)`` for a sequence)."""
    module = ug.export.to_torch(ug.nn.RNNCell(3, 2, seed=0))
    x = torch.zeros(shape, dtype=torch.float64)
    ok = (len(shape) == 2 and shape[1] == 3) if one_step else (
        len(shape) == 3 and shape[2] == 3)
    call = module.step if one_step else module
    if ok:
        call(x)
        return
    with pytest.raises(ug.ShapeError) as err:
        call(x)
    msg = str(err.value)
    assert f"got {shape};" in msg, msg
    assert ("(B, 3)" in msg and "T" not in msg.split(";")[0]) if one_step else (
        "(T, B, 3)" in msg)


def test_step_by_step_equals_the_sequence_and_a_cell_without_inputs_runs():
    cell = ug.nn.LSTM(3, 4, num_layers=2, seed=0)
    module = ug.export.to_torch(cell)
    xs = torch.randn(6, 2, 3, dtype=torch.float64)
    out, state = module(xs)
    s = None
    for t in range(6):
        y, s = module.step(xs[t], s)
        close(y, out[t].detach().numpy(), f"step {t}")
    for a, b in zip(s, state):
        close(a, b.detach().numpy(), "final state")
    counter = ug.Cell("counter")
    c = counter.state("c", (2,), init=np.array([1.0, -1.0]))
    w = counter.param("w", np.array([0.5, 2.0]))
    counter.feedback(c, ug.tanh(c * w))
    counter.output("y", c * 2.0)
    m = ug.export.to_torch(counter)
    got, last = m(None, steps=4)
    want, wlast = ug.unroll(counter, 4)(None)
    close(got, want.data, "cell without inputs")
    close(last, wlast.data, "cell without inputs: final state")
    # nothing to pass for a cell without inputs: the argument may be left out
    again, alast = m(steps=4)
    assert torch.equal(again, got) and torch.equal(alast, last)
    left, llast = ug.unroll(counter, 4)()
    assert np.array_equal(left.data, want.data) and np.array_equal(llast.data, wlast.data)
    y, c1 = m.step(state=torch.zeros(3, 2, dtype=torch.float64))
    assert tuple(y.shape) == (3, 2)
    with pytest.raises(ug.CellError, match=r"module\(steps=T\)"):
        m()
    # a cell with inputs called without them is told what to pass
    with pytest.raises(ug.CellError, match=r"the cell has inputs \['x'\]; pass xs shaped"):
        module()
    with pytest.raises(ug.CellError, match=r"has inputs \['x'\]: pass xs shaped \(T=3, B"):
        ug.unroll(ug.nn.RNNCell(3, 4, seed=0), steps=3)()


def test_tracing_the_module_warns_of_nothing_of_the_librarys_own():
    """torch.jit.trace of the module: no TracerWarning from the module's argument checks
    (torch's own deprecation warning aside), and the trace gives the eager outputs; the
    module also goes through torch.export.export, giving the same outputs."""
    import warnings

    module = ug.export.to_torch(ug.nn.RNNCell(3, 4, seed=0))
    xs = torch.randn(7, 2, 3, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        traced = torch.jit.trace(module, (xs,))
    ours = [w for w in seen if issubclass(w.category, torch.jit.TracerWarning)]
    assert not ours, [str(w.message) for w in ours]
    assert torch.equal(traced(xs)[0], module(xs)[0])
    exported = torch.export.export(module, (xs,))
    assert torch.allclose(exported.module()(xs)[0], module(xs)[0], rtol=0, atol=1e-12)


def test_the_module_computes_where_its_parameters_are():
    """On the meta device (shapes only) every tensor the module makes (initial states,
    masks, padded inputs, constants) must be made there too: one made on the CPU would be
    refused by the first op that mixes them. On a GPU, when there is one, the values too."""
    devices = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
    cell = every_op_cell()
    cpu = ug.export.to_torch(cell)
    xs = torch.randn(5, 3, 3, dtype=torch.float64)
    want, _ = cpu(xs, lengths=[5, 2, 0], truncate=3)
    for device in devices:
        module = ug.export.to_torch(cell).to(device)
        x = xs.to(device).requires_grad_()
        out, (h, c) = module(x, lengths=[5, 2, 0], truncate=3)
        assert out["y"].device.type == h.device.type == device
        (out["y"].sum() + c.sum()).backward()
        assert x.grad.device.type == device
        assert all(p.grad.device.type == device for p in module.parameters()
                   if p.grad is not None)
        if device != "meta":
            close(out["y"].cpu(), want["y"].detach().numpy(), f"outputs on {device}")


def test_bad_calls_raise_named_errors():
    module = ug.export.to_torch(ug.nn.LSTMCell(3, 4, seed=0))
    xs = torch.zeros(5, 2, 3, dtype=torch.float64)
    with pytest.raises(ug.ShapeError, match=r"input 'x' must have shape \(T, B, 3\)"):
        module(torch.zeros(5, 2, 4, dtype=torch.float64))
    with pytest.raises(ug.DTypeError, match="float32 but the module computes in "
                                            "torch.float64"):
        module(xs.float())
    with pytest.raises(ug.CellError, match=r"is missing \['c'\]"):
        module(xs, state={"h": torch.zeros(2, 4, dtype=torch.float64)})
    with pytest.raises(ug.ShapeError, match=r"initial state 'c' must have shape \(2, 4\)"):
        module(xs, state=(torch.zeros(2, 4, dtype=torch.float64),
                          torch.zeros(3, 4, dtype=torch.float64)))
    with pytest.raises(ug.ShapeError, match=r"lengths must lie in \[0, 5\]"):
        module(xs, lengths=[6, 1])
    with pytest.raises(ug.CellError, match="truncate must be a positive int"):
        module(xs, truncate=0)
    with pytest.raises(ug.CellError, match="needs a ug.Cell"):
        ug.export.to_torch(ug.unroll(ug.nn.RNNCell(1, 1), 2))
    with pytest.raises(ug.DTypeError, match="dtype must be a float type"):
        ug.export.to_torch(ug.nn.RNNCell(1, 1), dtype="int32")
    # an integer input is taken as numbers, as unrollgraph takes it
    out, _ = module(torch.ones(5, 2, 3, dtype=torch.int64))
    close(out, module(torch.ones(5, 2, 3, dtype=torch.float64))[0].detach().numpy(), "ints")


# -- streaming TBPTT -------------------------------------------------------------------------


@pytest.mark.parametrize("k1, k2", [(3, 3), (2, 5), (4, 20)])
def test_torch_tbptt_follows_ug_train_tbptt(k1, k2):
    rng = np.random.default_rng(k1 * 10 + k2)
    xs, ys = rng.standard_normal((11, 2, 2)), rng.standard_normal((11, 2, 1))
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    module = ug.export.to_torch(cell)
    head = ug.train.Linear(3, 1, seed=0)
    thead = torch.nn.Linear(3, 1).double()
    with torch.no_grad():
        thead.weight.copy_(torch.tensor(head.weight.data))
        thead.bias.copy_(torch.tensor(head.bias.data))
    # without an optimizer: the windows' gradients accumulate with fixed weights
    losses, state = ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1, k2, readout=head,
                                   progress=False)
    tlosses, tstate = ug.export.torch_tbptt(module, torch.from_numpy(xs),
                                            torch.from_numpy(ys),
                                            torch.nn.functional.mse_loss, k1, k2,
                                            readout=thead)
    close(np.array(tlosses), np.array(losses), "window losses")
    for a, b in zip(tstate, state):
        close(a, b, "final state")
    for k, p in cell.parameters().items():
        close(module.get_parameter(k).grad, p.grad, f"accumulated {k}.grad")
    # with an optimizer and clipping: the same weights after every window's update
    cell.zero_grad()
    module.zero_grad()
    thead.zero_grad()
    params = list(cell.parameters().values()) + list(head.parameters().values())
    losses, _ = ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1, k2, readout=head,
                               optimizer=ug.optim.SGD(params, lr=0.3), clip=0.5,
                               progress=False)
    topt = torch.optim.SGD(list(module.parameters()) + list(thead.parameters()), lr=0.3)
    tlosses, _ = ug.export.torch_tbptt(module, torch.from_numpy(xs), torch.from_numpy(ys),
                                       torch.nn.functional.mse_loss, k1, k2, readout=thead,
                                       optimizer=topt, clip=0.5)
    close(np.array(tlosses), np.array(losses), "window losses with updates")
    for k, p in cell.parameters().items():
        close(module.get_parameter(k), p.data, f"{k} after training")
    close(thead.weight, head.weight.data, "readout weight after training")


def test_torch_tbptt_refuses_bad_arguments():
    module = ug.export.to_torch(ug.nn.RNNCell(1, 2, seed=0))
    xs, ys = torch.zeros(4, 1, 1, dtype=torch.float64), torch.zeros(4, 1, 2, dtype=torch.float64)
    mse = torch.nn.functional.mse_loss
    with pytest.raises(ug.TrainingError, match="k2=1 < k1=2"):
        ug.export.torch_tbptt(module, xs, ys, mse, 2, 1)
    with pytest.raises(ug.TrainingError, match="clip needs an optimizer"):
        ug.export.torch_tbptt(module, xs, ys, mse, 2, 2, clip=1.0)
    with pytest.raises(ug.TrainingError, match="targets has 3"):
        ug.export.torch_tbptt(module, xs, ys[:3], mse, 2, 2)


# -- packaging and documentation --------------------------------------------------------------


def test_importing_unrollgraph_imports_neither_torch_nor_onnx():
    code = ("import sys, unrollgraph as ug; ug.export.lowering_table(); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'onnx', 'onnxruntime')); print(bad); assert not bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_without_torch_the_error_names_the_extra_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
            "import unrollgraph as ug\n"
            "try:\n    ug.export.to_torch\n"
            "except ug.LoweringError as e:\n    print(e.target, e)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("torch ug.export.to_torch needs the torch package")
    assert "pip install 'unrollgraph[torch]'" in done.stdout


def test_a_missing_engine_is_an_import_error_with_one_wording():
    """``except ImportError`` catches a missing torch or onnx, as for any missing module; the
    message has one form for both, naming the extra; ``from_torch`` of numpy arrays (with the
    module's names) needs no torch."""
    code = """if True:
        import sys
        sys.modules["torch"] = sys.modules["onnx"] = None  # as if neither were installed
        import numpy as np
        import unrollgraph as ug
        for call in (lambda: ug.export.to_torch, lambda: ug.export.torch_tbptt,
                     lambda: ug.export.to_onnx(ug.nn.RNNCell(1, 1), None),
                     lambda: ug.export.check_lowering("tanh", "torch", np.ones(2)),
                     lambda: ug.export.check_lowering("tanh", "onnx", np.ones(2))):
            try:
                call()
            except ImportError as e:
                assert isinstance(e, ug.MissingDependencyError), type(e)
                assert isinstance(e, ug.LoweringError) and e.name in ("torch", "onnx")
                print(e.target, "|", e)
        cell = ug.Cell("c")
        x, h = cell.input("x", (2,)), cell.state("h", (2,))
        w = cell.param("layer.0.w", np.ones(2))
        cell.feedback(h, ug.tanh(x * w + h))
        cell.output("y", h)
        ug.export.from_torch({"layer%2E0%2Ew": np.array([0.5, 2.0])}, cell)
        print(cell.parameters()["layer.0.w"].data.tolist(), "torch" in sys.modules and
              sys.modules["torch"] is not None)
    """
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:5] == [
        "torch | ug.export.to_torch needs the torch package, which is not installed; install "
        "it with pip install 'unrollgraph[torch]'",
        "torch | ug.export.torch_tbptt needs the torch package, which is not installed; "
        "install it with pip install 'unrollgraph[torch]'",
        "onnx | ug.export.to_onnx needs the onnx package, which is not installed; install it "
        "with pip install 'unrollgraph[onnx]'",
        "torch | ug.export.check_lowering(..., 'torch') needs the torch package, which is not "
        "installed; install it with pip install 'unrollgraph[torch]'",
        "onnx | ug.export.check_lowering(..., 'onnx') needs the onnx package, which is not "
        "installed; install it with pip install 'unrollgraph[onnx]'",
    ], done.stdout
    assert lines[5] == "[0.5, 2.0] False"


def test_dir_lists_what_the_package_imports_on_first_use():
    code = ("import sys, unrollgraph as ug; names = dir(ug.export); print(names); "
            "assert set(ug.export.__all__) <= set(names); "
            "assert not [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'onnx', 'onnxruntime')]")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"to_torch", "from_torch", "to_onnx", "torch_tbptt", "CellModule",
            "check_lowering", "lowering_table", "OnnxBuilder"} <= set(ug.export.__all__)
    for name in ug.export.__all__:  # each listed name is there
        assert getattr(ug.export, name) is not None


def test_docs_hold_the_lowering_table_of_the_registry():
    page = (ROOT / "docs" / "export.md").read_text()
    found = re.search(r"<!-- lowering-table -->\n(.*?)\n<!-- /lowering-table -->", page, re.S)
    assert found, "docs/export.md lost its <!-- lowering-table --> markers"
    assert found.group(1) == ug.export.lowering_table(), (
        "the table in docs/export.md is out of date: run python -m unrollgraph.export "
        "--write docs/export.md")


def test_the_round_trip_example_runs_at_a_tiny_size(tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "roundtrip_torch.py"), run_name="example")
    report = example["main"](["--tiny", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "s per epoch" in printed and "weights back" in printed
    assert report["max_weight_difference"] == 0.0
    assert report["max_output_difference"] <= 1e-10
    for name in ("cell.svg", "flow.png"):
        assert (tmp_path / name).stat().st_size > 0


# -- check_lowering ----------------------------------------------------------------------------


def test_check_lowering_catches_a_wrong_rule_and_a_wrong_gradient():
    name = "badop_check_test"
    ops_module.defop(name, lambda a: a * 2, [lambda g, ans, a: 2 * g],
                     torch=lambda torch, a: a * 3)
    try:
        with pytest.raises(ug.LoweringError, match=r"torch rule of op 'badop_check_test' "
                           r"disagrees with its numpy forward: worst at index \(0,\): the "
                           r"rule gives 2.4, the op 1.6 \(off by 0.8") as err:
            ug.export.check_lowering(name, "torch", np.array([0.8, -0.5]))
        assert err.value.op == name and err.value.target == "torch"
        # the right values, but cut from autograd: the gradient is wrong
        ops_module.deflower(name, "torch", lambda torch, a: (a * 2).detach())
        with pytest.raises(ug.LoweringError, match=r"through torch.autograd\) disagrees with "
                                                   r"its VJP of input 0"):
            ug.export.check_lowering(name, "torch", np.array([0.8, -0.5]))
        ops_module.deflower(name, "torch", lambda torch, a: a.float() * 2)
        with pytest.raises(ug.LoweringError, match="gives float32 where its numpy forward "
                                                   "gives float64"):
            ug.export.check_lowering(name, "torch", np.array([0.8, -0.5]))
        ops_module.deflower(name, "torch", lambda torch, a: a.reshape(7))
        with pytest.raises(ug.LoweringError, match=r"fails on inputs of shapes \[\(2,\)\]"):
            ug.export.check_lowering(name, "torch", np.array([0.8, -0.5]))
        ops_module.deflower(name, "torch", lambda torch, a: a * 2)
        assert ug.export.check_lowering(name, "torch", np.array([[0.8, -0.5]])) == {
            "forward": 0.0, "gradient of input 0": 0.0}
        with pytest.raises(ug.LoweringError, match="has no onnx lowering rule"):
            ug.export.check_lowering(name, "onnx", np.ones(2))
        with pytest.raises(ug.LoweringError, match="unknown export target 'jax'"):
            ug.export.check_lowering(name, "jax", np.ones(2))
    finally:
        ops_module.undefop(name)
    with pytest.raises(ug.GraphError, match="no op registered under 'badop_check_test'"):
        ug.export.check_lowering(name, "torch", np.ones(2))


@pytest.mark.parametrize("target", ["torch", "onnx"])
@pytest.mark.parametrize("name", sorted(set(BUILDERS) - PLUMBING))
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_check_lowering_passes_the_librarys_rules(name, target, data):
    if target == "onnx":
        pytest.importorskip("onnx")
    case = data.draw(BUILDERS[name](name))
    args = [np.asarray(a) if k in case.const else np.asarray(a, dtype=np.float64)
            for k, a in enumerate(case.args)]
    report = ug.export.check_lowering(name, target, *args, **case.attrs)
    assert max(report.values()) <= 1e-10


# -- torch.jit.script of an exported cell ------------------------------------------------------

# (torch 2.13 marks TorchScript deprecated in favour of torch.compile; it still compiles)
SCRIPT_WARNING = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z]*` is deprecated")

def compare_scripted(cell, xs, h0s=None, truncate=None, lengths=None, seed=0, steps=None):
    """The scripted module gives the eager module's outputs and final states bit for bit,
    and its gradients (of the parameters, inputs and initial states) to 1e-12, in float64."""
    module = ug.export.to_torch(cell)
    scripted = torch.jit.script(module)
    assert isinstance(scripted, torch.jit.ScriptModule)
    rng = np.random.default_rng(seed)
    tlens = None if lengths is None else torch.tensor(np.asarray(lengths), dtype=torch.int64)
    got = []
    for run in (module, scripted):
        module.zero_grad()
        txs = {k: torch.tensor(v, requires_grad=True) for k, v in xs.items()}
        arg = (None if not txs else txs[next(iter(txs))] if len(txs) == 1 else txs)
        th0 = None if h0s is None else tuple(torch.tensor(h, requires_grad=True) for h in h0s)
        state = th0 if th0 is None or len(th0) != 1 else th0[0]
        kw = {"steps": steps} if steps is not None else {}
        if run is module:
            outs, fins = run(arg, state=state, lengths=lengths, truncate=truncate, **kw)
        else:
            outs, fins = run(arg, state, tlens, truncate, steps)
        outs, fins = _as_list(outs), _as_list(fins)
        r = np.random.default_rng(seed)
        loss = sum((o * torch.from_numpy(r.standard_normal(tuple(o.shape)))).sum()
                   for o in outs + fins)
        if loss.requires_grad:
            loss.backward()
        grads = [p.grad for p in module.parameters()] + [x.grad for x in txs.values()] + [
            h.grad for h in th0 or ()]
        got.append((outs, fins, grads))
    (o1, f1, g1), (o2, f2, g2) = got
    tag = f"{cell.name} truncate={truncate} lengths={lengths}"
    for what, a_list, b_list in (("output", o1, o2), ("final state", f1, f2),
                                 ("gradient", g1, g2)):
        assert len(a_list) == len(b_list), (tag, what)
        for a, b in zip(a_list, b_list):
            assert (a is None) == (b is None), (tag, what)
            if a is None:
                continue
            assert a.dtype == b.dtype == torch.float64, (tag, what)
            if what == "gradient":  # (the parts add up in another order: to rounding)
                scale = float(a.abs().max()) if a.numel() else 0.0
                assert float((a - b).abs().max()) <= 1e-12 * scale if a.numel() else True, \
                    (tag, what)
            else:
                assert torch.equal(a, b), (tag, what)
    del rng
    return scripted


@SCRIPT_WARNING
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("kind", READY)
def test_a_scripted_ready_cell_computes_what_the_module_computes(kind, run):
    """``torch.jit.script(ug.export.to_torch(cell))`` compiles (the traced step in a
    TorchScript loop over time), and gives the eager module's numbers and gradients, with
    lengths and truncation, for a batch size other than the one the step was traced on."""
    cell = READY[kind]()
    rng = np.random.default_rng(len(kind))
    xs = {"x": rng.standard_normal((7, 3, 3))}
    h0s = [rng.standard_normal((3,) + t.shape[1:]) for t in cell.states.values()]
    truncate, lengths = RUNS[run]
    compare_scripted(cell, xs, h0s, truncate=truncate, lengths=lengths)
    if run == "full":
        compare_scripted(cell, xs, None)
        # the scripted module shares the parameters: an optimizer step shows in both
        module = ug.export.to_torch(cell)
        scripted = torch.jit.script(module)
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        x = torch.from_numpy(xs["x"])
        module(x)[0].square().sum().backward()
        opt.step()
        assert torch.equal(scripted(x)[0], module(x)[0])
        assert not torch.equal(scripted(x)[0], ug.export.to_torch(cell)(x)[0])


@SCRIPT_WARNING
def test_a_scripted_cell_with_every_op_and_several_outputs():
    cell = every_op_cell()
    rng = np.random.default_rng(1)
    xs = {"x": rng.uniform(-1, 1, (5, 4, 3))}
    h0s = [rng.uniform(-1, 1, (4, 4)), rng.uniform(-1, 1, (4, 4))]
    for truncate, lengths in [(None, None), (2, [5, 0, 3, 1])]:
        compare_scripted(cell, xs, h0s, truncate=truncate, lengths=lengths)
    scripted = compare_scripted(cell, xs, None)
    # it saves and loads as any TorchScript module, and computes the same there
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    x = torch.from_numpy(xs["x"])
    want, got = scripted(x), loaded(x)
    assert all(torch.equal(want[0][k], got[0][k]) for k in want[0])
    assert all(torch.equal(a, b) for a, b in zip(want[1], got[1]))


@SCRIPT_WARNING
@settings(max_examples=10, deadline=None)
@given(spec=cells(), data=st.data())
def test_scripted_random_cells_compute_what_the_module_computes(spec, data):
    compare_scripted(*random_case(spec, data, max_batch=4))


@SCRIPT_WARNING
def test_a_scripted_cell_without_inputs_runs_steps():
    cell = ug.Cell("clock")
    h = cell.state("h", (2,), init=np.array([1.0, 0.0]))
    R = cell.param("R", np.array([[0.8, -0.6], [0.6, 0.8]]))
    cell.feedback(h, h @ R.T)
    cell.output("y", h * 2.0)
    compare_scripted(cell, {}, None, steps=6)
    compare_scripted(cell, {}, [np.array([[0.5, 1.0], [0.0, -1.0], [2.0, 2.0]])], steps=4,
                     truncate=2)


@SCRIPT_WARNING
def test_a_rule_a_trace_cannot_hold_is_named_with_trace_suggested():
    """A user rule that loops over the rows of the batch in Python is right eagerly, but its
    trace holds as many rows as the example batch had: script refuses with a LoweringError
    naming the ops and suggesting torch.jit.trace, instead of compiling a module that is
    silently wrong for other batch sizes."""
    name = "rowwise_double_script_test"
    ops_module.defop(name, lambda a: a * 2.0, [lambda g, ans, a: g * 2.0],
                     torch=lambda torch, a: torch.stack([row * 2.0 for row in a]))
    try:
        cell = ug.Cell("batchy")
        x = cell.input("x", (2,))
        h = cell.state("h", (2,))
        cell.feedback(h, apply(name, x + h) * 0.1)
        cell.output("y", h)
        module = ug.export.to_torch(cell)
        xs = torch.ones((3, 4, 2), dtype=torch.float64)
        out, _h = module(xs)  # the eager module is right
        want, _ = ug.unroll(cell, 3)(xs.numpy())
        assert np.allclose(out.detach().numpy(), want.data, rtol=1e-12)
        with pytest.raises(ug.LoweringError, match=rf"{name}.*torch\.jit\.trace"):
            torch.jit.script(module)
    finally:
        ops_module._REGISTRY.pop(name, None)

