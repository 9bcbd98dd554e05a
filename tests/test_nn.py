"""The ready cells (ug.nn): outputs, states and every gradient of the unrolled cells against a
hand-written numpy forward + BPTT (benchmarks/reference.py), gradcheck, state dicts, and
(when PyTorch is installed) PyTorch itself."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

import unrollgraph as ug

_REF_PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "reference.py"
_spec = importlib.util.spec_from_file_location("_unrollgraph_reference", _REF_PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

RTOL, ATOL = 1e-10, 1e-12

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
STACKS = {"rnn": ug.nn.RNN, "lstm": ug.nn.LSTM, "gru": ug.nn.GRU}
VARIANTS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", None), ("gru", None)]
SIZES = [(1, 2, 3, 2), (5, 1, 3, 4), (7, 3, 4, 5)]  # (T, B, D, H)


def make(kind, nonlinearity, D, H, layers, bias, seed):
    """A single cell (layers=None) or a stack of ``layers`` layers."""
    kw = {"bias": bias, "seed": seed}
    if kind == "rnn":
        kw["nonlinearity"] = nonlinearity
    if layers is None:
        return CELLS[kind](D, H, **kw)
    return STACKS[kind](D, H, num_layers=layers, **kw)


def state_names(kind, layers):
    names = ["h", "c"] if kind == "lstm" else ["h"]
    if layers is None:
        return names
    return [f"{n}_l{i}" for i in range(layers) for n in names]


def ref_init(kind, init, layers):
    """ug's flat state order (h_l0, c_l0, h_l1, ...) -> the reference's per-layer list."""
    if init is None:
        return None
    per = 2 if kind == "lstm" else 1
    groups = [init[i:i + per] for i in range(0, len(init), per)]
    return [tuple(g) if kind == "lstm" else g[0] for g in groups]


def flatten_ref(kind, per_layer):
    out = []
    for s in per_layer:
        out.extend(s if kind == "lstm" else [s])
    return out


def run_both(kind, nonlinearity, T, B, D, H, layers, bias, with_init, seed=0):
    """Run ug and the reference on the same random problem; return both sides' results."""
    rng = np.random.default_rng(seed)
    cell = make(kind, nonlinearity, D, H, layers, bias, seed)
    # scale the default U(-1/sqrt(H), 1/sqrt(H)) init up so the gates leave their linear range
    cell.load_state_dict({k: 2.5 * v for k, v in cell.state_dict().items()})
    xs_data = rng.normal(size=(T, B, D))
    names = state_names(kind, layers)
    init = [rng.normal(size=(B, H)) for _ in names] if with_init else None
    R = rng.normal(size=(T, B, H))  # dL/d(outputs)
    S = [rng.normal(size=(B, H)) for _ in names]  # dL/d(final states)

    net = ug.unroll(cell, steps=T)
    xs = ug.tensor(xs_data.copy(), requires_grad=True, name="xs")
    st = None
    if with_init:
        st = tuple(ug.tensor(a.copy(), requires_grad=True, name=n) for a, n in zip(init, names))
        st = st[0] if len(st) == 1 else st
    out, final = net(xs, state=st)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * ug.tensor(R)).sum()
    for f, s in zip(finals, S):
        loss = loss + (f * ug.tensor(s)).sum()
    loss.backward()
    mine = {
        "out": out.data,
        "finals": [f.data for f in finals],
        "grads": {k: p.grad for k, p in cell.parameters().items()},
        "dxs": xs.grad,
        "dinit": None if st is None else [t.grad for t in (st if isinstance(st, tuple) else (st,))],
        "loss": loss.item(),
    }

    n_layers = 1 if layers is None else layers
    rlayers = ref.layers_from_state_dict(cell.state_dict(), layers)
    assert len(rlayers) == n_layers
    ys, rfinals, cache = ref.forward(kind, xs_data, rlayers, ref_init(kind, init, layers),
                                     nonlinearity or "tanh")
    dfinals = ref_init(kind, S, layers)
    dxs, rgrads, dinit = ref.backward(cache, R, dfinals)
    sfx = (lambda k, i: k) if layers is None else (lambda k, i: f"{k}_l{i}")
    theirs = {
        "out": ys,
        "finals": flatten_ref(kind, rfinals),
        "grads": {sfx(k, i): g for i, gs in enumerate(rgrads) for k, g in gs.items()},
        "dxs": dxs,
        "dinit": flatten_ref(kind, dinit),
        "loss": float((ys * R).sum() + sum((f * s).sum()
                                           for f, s in zip(flatten_ref(kind, rfinals), S))),
    }
    return cell, mine, theirs


def assert_close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=what)


# -- against the hand-written numpy BPTT ----------------------------------------------------------
@pytest.mark.parametrize("T,B,D,H", SIZES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layers", [None, 2], ids=["cell", "stack2"])
@pytest.mark.parametrize("kind,nonlinearity", VARIANTS, ids=["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_matches_handwritten_bptt(kind, nonlinearity, layers, bias, T, B, D, H):
    cell, mine, theirs = run_both(kind, nonlinearity, T, B, D, H, layers, bias,
                                  with_init=(T + B) % 2 == 0)
    assert mine["out"].shape == (T, B, H)
    assert_close(mine["out"], theirs["out"], "outputs")
    assert len(mine["finals"]) == len(theirs["finals"])
    for k, (a, b) in enumerate(zip(mine["finals"], theirs["finals"])):
        assert a.shape == (B, H)
        assert_close(a, b, f"final state {k}")
    assert_close(mine["loss"], theirs["loss"], "loss")
    assert set(mine["grads"]) == set(theirs["grads"])
    for k, g in mine["grads"].items():
        assert g is not None, k
        assert g.shape == cell.parameters()[k].shape
        assert_close(g, theirs["grads"][k], f"d loss / d {k}")
    assert mine["dxs"].shape == (T, B, D)
    assert_close(mine["dxs"], theirs["dxs"], "d loss / d xs")
    if mine["dinit"] is not None:
        for k, (a, b) in enumerate(zip(mine["dinit"], theirs["dinit"])):
            assert_close(a, b, f"d loss / d initial state {k}")


def test_relu_rnn_is_not_tanh():
    """The nonlinearity is honoured (the relu and tanh variants differ on the same weights)."""
    xs = np.random.default_rng(1).normal(size=(3, 2, 3))
    outs = []
    for nl in ("tanh", "relu"):
        cell = ug.nn.RNNCell(3, 4, nonlinearity=nl, seed=7)
        outs.append(ug.unroll(cell, steps=3)(xs)[0].data)
    assert np.all(outs[1] >= 0)
    assert not np.allclose(outs[0], outs[1])


def test_gradients_accumulate_over_calls_and_zero_grad_resets():
    cell = ug.nn.GRUCell(3, 4, seed=0)
    net = ug.unroll(cell, steps=4)
    xs = np.random.default_rng(0).normal(size=(4, 2, 3))
    net(xs)[0].sum().backward()
    once = {k: p.grad.copy() for k, p in cell.parameters().items()}
    net(xs)[0].sum().backward()
    for k, p in cell.parameters().items():
        assert_close(p.grad, 2 * once[k], k)
    cell.zero_grad()
    assert all(p.grad is None for p in cell.parameters().values())


def test_each_parameter_appears_once_in_the_unrolled_graph():
    cell = ug.nn.LSTM(3, 4, num_layers=2, seed=0)
    net = ug.unroll(cell, steps=6)
    assert sorted(net.param_nodes) == sorted(cell.parameters())
    ids = [id(n) for n in net.graph.nodes if n.op == "param"]
    assert len(ids) == len(set(ids)) == 8


# -- gradcheck -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradcheck_inputs_and_initial_state(kind):
    T, B, D, H = 3, 2, 2, 3
    cell = CELLS[kind](D, H, seed=3)
    cell.load_state_dict({k: 2.0 * v for k, v in cell.state_dict().items()})
    net = ug.unroll(cell, steps=T)
    rng = np.random.default_rng(4)
    xs = rng.normal(size=(T, B, D))
    hs = [rng.normal(size=(B, H)) for _ in cell.states]

    def fn(xs, *state):
        out, final = net(xs, state=state if len(state) > 1 else state[0])
        finals = final if isinstance(final, tuple) else (final,)
        total = out.sum(axis=0)
        for f in finals:
            total = total + f * f
        return total

    assert ug.gradcheck(fn, [xs] + hs)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradcheck_parameters(kind):
    """Every parameter element: the unrolled net's gradient against central differences of
    the loss, the parameter being replaced through load_state_dict."""
    T, B, D, H = 3, 2, 2, 2
    cell = CELLS[kind](D, H, seed=5)
    base = {k: 2.0 * v for k, v in cell.state_dict().items()}
    net = ug.unroll(cell, steps=T)
    xs = np.random.default_rng(6).normal(size=(T, B, D))
    proj = np.random.default_rng(7).normal(size=(T, B, H))

    def loss_of(state):
        cell.load_state_dict(state)
        out, _ = net(xs)
        return (out * ug.tensor(proj)).sum()

    cell.zero_grad()
    loss_of(base).backward()
    analytic = {k: p.grad.copy() for k, p in cell.parameters().items()}
    eps = 1e-6
    for k, v in base.items():
        numeric = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            up, down = dict(base), dict(base)
            up[k], down[k] = v.copy(), v.copy()
            up[k][idx] += eps
            down[k][idx] -= eps
            numeric[idx] = (loss_of(up).item() - loss_of(down).item()) / (2 * eps)
        np.testing.assert_allclose(analytic[k], numeric, rtol=1e-6, atol=1e-8, err_msg=k)


def test_gradcheck_stacked_gru():
    T, B, D, H = 2, 2, 2, 2
    cell = ug.nn.GRU(D, H, num_layers=2, seed=8)
    net = ug.unroll(cell, steps=T)
    xs = np.random.default_rng(9).normal(size=(T, B, D))
    assert ug.gradcheck(lambda x: net(x)[0], [xs])


# -- parameters and state dicts -------------------------------------------------------------------
@pytest.mark.parametrize("kind,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_parameter_names_and_shapes_follow_pytorch(kind, gates):
    D, H = 3, 5
    cell = CELLS[kind](D, H, seed=0)
    shapes = {k: p.shape for k, p in cell.parameters().items()}
    assert shapes == {
        "weight_ih": (gates * H, D), "weight_hh": (gates * H, H),
        "bias_ih": (gates * H,), "bias_hh": (gates * H,),
    }
    assert list(cell.parameters()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    for k, p in cell.parameters().items():
        assert getattr(cell, k) is p
        assert p.requires_grad
        assert np.all(np.abs(p.data) <= 1 / np.sqrt(H))  # PyTorch's U(-1/sqrt(H), 1/sqrt(H))
    assert set(CELLS[kind](D, H, bias=False).parameters()) == {"weight_ih", "weight_hh"}

    stack = STACKS[kind](D, H, num_layers=3, seed=0)
    sshapes = {k: p.shape for k, p in stack.parameters().items()}
    expect = {}
    for i in range(3):
        d = D if i == 0 else H
        expect.update({f"weight_ih_l{i}": (gates * H, d), f"weight_hh_l{i}": (gates * H, H),
                       f"bias_ih_l{i}": (gates * H,), f"bias_hh_l{i}": (gates * H,)})
    assert sshapes == expect
    for k, p in stack.parameters().items():
        assert getattr(stack, k) is p  # like torch.nn.LSTM.weight_ih_l0
    with pytest.raises(AttributeError, match="no attribute 'weight_ih_l3'"):
        _ = stack.weight_ih_l3


def test_seed_makes_parameters_reproducible():
    a = ug.nn.LSTMCell(3, 4, seed=11).state_dict()
    b = ug.nn.LSTMCell(3, 4, seed=11).state_dict()
    c = ug.nn.LSTMCell(3, 4, seed=12).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_state_dict_round_trip():
    src = ug.nn.GRU(3, 4, num_layers=2, seed=1)
    dst = ug.nn.GRU(3, 4, num_layers=2, seed=2)
    sd = src.state_dict()
    dst.load_state_dict(sd)
    for k, v in dst.state_dict().items():
        assert np.array_equal(v, sd[k])
    xs = np.random.default_rng(0).normal(size=(4, 2, 3))
    np.testing.assert_array_equal(ug.unroll(src, 4)(xs)[0].data, ug.unroll(dst, 4)(xs)[0].data)
    # state_dict returns copies: editing them leaves the cell alone
    sd["weight_hh_l0"][...] = 0
    assert not np.all(src.parameters()["weight_hh_l0"].data == 0)
    # loading does not rebind: a net unrolled before the load sees the new values
    net = ug.unroll(dst, 4)
    before = net(xs)[0].data.copy()
    dst.load_state_dict({k: v * 0.5 for k, v in dst.state_dict().items()})
    assert not np.allclose(net(xs)[0].data, before)


def test_load_state_dict_wrong_shape_names_the_parameter():
    cell = ug.nn.LSTMCell(3, 4, seed=0)
    sd = cell.state_dict()
    sd["weight_hh"] = np.zeros((4, 4))
    with pytest.raises(ug.ShapeError, match=r"'weight_hh' has shape \(16, 4\).*gives \(4, 4\)"):
        cell.load_state_dict(sd)


def test_load_state_dict_unknown_and_missing_names():
    cell = ug.nn.RNNCell(3, 4, seed=0)
    sd = cell.state_dict()
    sd["weight_ih_l0"] = sd.pop("weight_ih")
    with pytest.raises(ug.CellError) as err:
        cell.load_state_dict(sd)
    msg = str(err.value)
    assert "unknown names ['weight_ih_l0']" in msg
    assert "missing ['weight_ih']" in msg
    assert "'bias_hh'" in msg  # lists what was expected


def test_bad_constructor_arguments():
    with pytest.raises(ug.CellError, match="nonlinearity must be 'tanh' or 'relu'"):
        ug.nn.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ug.CellError, match="hidden_size must be a positive int"):
        ug.nn.LSTMCell(3, 0)
    with pytest.raises(ug.CellError, match="num_layers must be a positive int"):
        ug.nn.GRU(3, 4, num_layers=0)


# -- PyTorch (optional extra checks) --------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("kind", ["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_matches_torch_cell(kind):
    torch = _torch()
    T, B, D, H = 5, 3, 4, 6
    torch.manual_seed(0)
    if kind.startswith("rnn"):
        nl = kind.split("-")[1]
        tcell = torch.nn.RNNCell(D, H, nonlinearity=nl).double()
        cell = ug.nn.RNNCell(D, H, nonlinearity=nl)
    elif kind == "lstm":
        tcell, cell = torch.nn.LSTMCell(D, H).double(), ug.nn.LSTMCell(D, H)
    else:
        tcell, cell = torch.nn.GRUCell(D, H).double(), ug.nn.GRUCell(D, H)
    cell.load_state_dict(tcell.state_dict())
    rng = np.random.default_rng(1)
    xs_np, R = rng.normal(size=(T, B, D)), rng.normal(size=(T, B, H))

    xt = torch.tensor(xs_np, requires_grad=True)
    state, outs = None, []
    for t in range(T):
        state = tcell(xt[t], state)
        outs.append(state[0] if kind == "lstm" else state)
    tout = torch.stack(outs)
    (tout * torch.tensor(R)).sum().backward()

    xs = ug.tensor(xs_np, requires_grad=True)
    out, _ = ug.unroll(cell, steps=T)(xs)
    (out * ug.tensor(R)).sum().backward()
    assert_close(out.data, tout.detach().numpy(), "outputs")
    assert_close(xs.grad, xt.grad.numpy(), "xs.grad")
    for k, p in tcell.named_parameters():
        assert_close(cell.parameters()[k].grad, p.grad.numpy(), k)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_matches_torch_stacked(kind):
    torch = _torch()
    T, B, D, H, L = 6, 2, 3, 4, 2
    torch.manual_seed(1)
    tmod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    tnet = tmod(D, H, num_layers=L).double()
    cell = STACKS[kind](D, H, num_layers=L)
    assert {k: p.shape for k, p in cell.parameters().items()} == {
        k: tuple(v.shape) for k, v in tnet.state_dict().items()
    }
    cell.load_state_dict(tnet.state_dict())
    rng = np.random.default_rng(2)
    xs_np, R = rng.normal(size=(T, B, D)), rng.normal(size=(T, B, H))
    S = rng.normal(size=(L, B, H))

    xt = torch.tensor(xs_np, requires_grad=True)
    tout, tstate = tnet(xt)
    th = tstate[0] if kind == "lstm" else tstate
    ((tout * torch.tensor(R)).sum() + (th * torch.tensor(S)).sum()).backward()

    xs = ug.tensor(xs_np, requires_grad=True)
    out, final = ug.unroll(cell, steps=T)(xs)
    hs = final[0::2] if kind == "lstm" else (final if isinstance(final, tuple) else (final,))
    loss = (out * ug.tensor(R)).sum()
    for layer, h in enumerate(hs):
        loss = loss + (h * ug.tensor(S[layer])).sum()
    loss.backward()
    assert_close(out.data, tout.detach().numpy(), "outputs")
    for layer, h in enumerate(hs):
        assert_close(h.data, th[layer].detach().numpy(), f"h_l{layer}")
    if kind == "lstm":
        for layer, c in enumerate(final[1::2]):
            assert_close(c.data, tstate[1][layer].detach().numpy(), f"c_l{layer}")
    assert_close(xs.grad, xt.grad.numpy(), "xs.grad")
    for k, p in tnet.named_parameters():
        assert_close(cell.parameters()[k].grad, p.grad.numpy(), k)
