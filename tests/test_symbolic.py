"""ug.symbolic: sympy expressions of graphs, their derivatives, the chain rule path by path
and the BPTT decomposition, checked against the engine's numbers."""

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph import symbolic


def _at(expr, env):
    return float(expr.xreplace({k: sympy.Float(v) for k, v in env.items()}).evalf())


def test_exact_integers_and_rationals_stay_exact():
    x = ug.tensor(3.0, requires_grad=True, name="x")
    e = ug.to_sympy(x * x)
    assert e == sympy.Symbol("x", real=True) ** 2
    assert "2.0" not in sympy.latex(e) and sympy.latex(e) == "x^{2}"
    assert str(ug.to_sympy(x ** 3 * 0.5)) == "x**3/2"
    assert str(symbolic.grad(x * x, x)) == "2*x"


def test_chain_rule_of_x_times_x_has_two_paths_and_simplifies_to_grad():
    x = ug.tensor(0.7, requires_grad=True, name="x")
    y = ug.tanh(x * x)
    c = symbolic.chain_rule(y, x)
    assert len(c.paths) == 2 and all(p[0] == "x" for p in c.paths)
    assert sympy.simplify(c.doit() - symbolic.grad(y, x)) == 0
    y.backward()
    assert np.isclose(sum(c.values()), float(x.grad))
    assert "tanh" in c.latex()


_UNARY = [ug.tanh, ug.sigmoid, ug.exp, lambda t: t * t, lambda t: 1.0 / (1.0 + t * t)]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_UNARY) - 1), st.integers(0, 2)),
                min_size=1, max_size=6),
       st.floats(-1.5, 1.5), st.floats(-1.5, 1.5))
def test_grad_equals_the_engine_on_random_scalar_graphs(program, a0, b0):
    a = ug.tensor(a0, requires_grad=True, name="a")
    b = ug.tensor(b0, requires_grad=True, name="b")
    h = a
    for f, mix in program:
        h = _UNARY[f](h)
        h = h + b if mix == 0 else (h * b if mix == 1 else h - a)
    loss = h * b  # b is in every graph
    ga, gb = symbolic.grad(loss, a), symbolic.grad(loss, b)
    loss.backward()
    env = {sympy.Symbol("a", real=True): a0, sympy.Symbol("b", real=True): b0}
    assert np.isclose(_at(ga, env), float(a.grad), rtol=1e-9, atol=1e-12)
    assert np.isclose(_at(gb, env), float(b.grad), rtol=1e-9, atol=1e-12)


def _rnn(T, H, seed=0):
    cell = ug.nn.RNNCell(1, H, seed=seed)
    net = ug.unroll(cell, steps=T)
    xs = np.random.default_rng(seed).normal(size=(T, 1, 1))
    out, h = net(xs)
    loss = (out * out).sum()
    return cell, net, loss


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_grad_on_an_unrolled_scalar_rnn(T):
    cell, net, loss = _rnn(T, 1)
    g = symbolic.grad(loss, cell.weight_hh)
    loss.backward()
    env = {sympy.Symbol("weight_hh_00", real=True): float(cell.weight_hh.data[0, 0])}
    for name in ("weight_ih", "bias_ih", "bias_hh"):
        p = cell.parameters()[name]
        for i, v in np.ndenumerate(p.data):
            env[sympy.Symbol(f"{name}_{''.join(map(str, i))}", real=True)] = float(v)
    assert np.isclose(_at(g[0, 0], env), float(cell.weight_hh.grad[0, 0]), rtol=1e-9)


@pytest.mark.parametrize("H", [1, 2])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_bptt_terms_equal_step_contributions(T, H):
    cell, net, loss = _rnn(T, H, seed=T)
    loss.backward()
    for param in ("bias_ih", "weight_hh") if T < 4 else ("weight_hh",):
        b = symbolic.bptt(net, param)
        assert len(b.terms) == T and b.values.shape == (T,) + cell.parameters()[param].shape
        parts = net.last_run.step_contributions(param)
        np.testing.assert_allclose(b.values, parts, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b.values.sum(axis=0), cell.parameters()[param].grad,
                                   rtol=1e-9, atol=1e-12)
    text = b.latex()
    w = r"\mathrm{weight}_{\mathrm{hh}}"
    assert text.startswith("\\begin{aligned}\n" + r"\frac{\partial L}{\partial " + w
                           + r"} &= \sum_{t=0}")
    assert text.count(r"\frac{\partial L}{\partial " + w + "^{(") == T + 1
    assert "dL/dweight_hh^(0)" in str(b)


def test_bptt_before_backward_and_unknown_parameter():
    cell = ug.nn.RNNCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=2)
    with pytest.raises(ug.UnrollGraphError, match="backward"):
        symbolic.bptt(net, "weight_hh")
    out, h = net(np.ones((2, 1, 1)))
    out.sum().backward()
    with pytest.raises(ug.CellError, match="no parameter 'W'"):
        symbolic.bptt(net, "W")


def test_graphs_too_large_get_a_clear_error():
    w = ug.tensor(np.ones((20, 20)), requires_grad=True, name="W")
    x = ug.tensor(np.ones(20), name="x")
    with pytest.raises(ug.UnrollGraphError, match="too large to be useful symbolically"):
        ug.to_sympy((w @ x).sum())


def test_a_non_scalar_loss_is_refused_by_grad():
    x = ug.tensor([1.0, 2.0], requires_grad=True, name="x")
    with pytest.raises(ug.GradientError, match="must be a scalar"):
        symbolic.grad(x * x, x)
    assert ug.to_sympy(x * x).shape == (2, 1)


def test_bptt_with_the_loss_itself():
    cell, net, loss = _rnn(3, 1)
    loss.backward()
    b = symbolic.bptt(net, "weight_hh", loss=loss)
    np.testing.assert_allclose(b.values, net.last_run.step_contributions("weight_hh"),
                               rtol=1e-9, atol=1e-12)
    assert "tanh" in str(b.terms[2]) and "**2" in str(b.terms[2])
    other = ug.tensor(1.0, requires_grad=True) * 2
    with pytest.raises(ug.UnrollGraphError, match="not computed from the net's last run"):
        symbolic.bptt(net, "weight_hh", loss=other)


# -- the BPTT terms as products of step Jacobians ---------------------------------------------
def _numeric(expr, env):
    fenv = {k: sympy.Float(v) for k, v in env.items()}
    return np.array(sympy.ImmutableMatrix(expr.doit()).xreplace(fenv).evalf(), dtype=float)


@pytest.mark.parametrize("H", [1, 2])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_bptt_terms_are_products_of_the_step_jacobians(T, H):
    cell, net, loss = _rnn(T, H, seed=T)
    loss.backward()
    b = symbolic.bptt(net, cell.weight_hh, loss=loss)
    for t, term in enumerate(b.terms):
        products = term.args if isinstance(term, sympy.MatAdd) else (term,)
        # one product per later step k >= t (the loss reads every output)
        assert len(products) == T - t == len(b.factors[t])
        for k, (prod, named) in enumerate(zip(products, b.factors[t]), start=t):
            assert isinstance(prod, sympy.MatMul)
            assert len(prod.args) == k - t + 2  # dL/dh_(k+1), k - t Jacobians, dh_(t+1)/dW
            assert [nm for nm, _ in named] == (
                [f"dL/dh_{k + 1}"] + [f"dh_{j + 1}/dh_{j}" for j in range(k, t, -1)]
                + [f"dh_{t + 1}/dweight_hh"])
            for _, m in named[1:-1]:
                assert m.shape == (H, H)  # a step's Jacobian dh_(j+1)/dh_j
        value = _numeric(term, b.symbols).reshape(cell.weight_hh.shape)
        np.testing.assert_allclose(value, b.values[t], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.values, net.last_run.step_contributions("weight_hh"),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.values.sum(axis=0), cell.weight_hh.grad, rtol=1e-9,
                               atol=1e-12)
    text, latex = str(b), b.latex()
    assert "dL/dweight_hh^(0) = dL/dh_1 · dh_1/dweight_hh" in text
    if T > 1:
        assert "dL/dh_2 · dh_2/dh_1 · dh_1/dweight_hh" in text
        assert r"\frac{\partial h_{2}}{\partial h_{1}}" in latex


def test_bptt_accepts_the_parameter_tensor_or_its_name():
    cell, net, loss = _rnn(3, 2)
    loss.backward()
    by_tensor = symbolic.bptt(net, cell.bias_hh)
    by_name = symbolic.bptt(net, "bias_hh")
    np.testing.assert_array_equal(by_tensor.values, by_name.values)
    assert by_tensor.param == "bias_hh"
    stranger = ug.tensor(np.zeros((2, 2)), requires_grad=True, name="W")
    other = ug.nn.RNNCell(1, 2, seed=1).weight_hh
    for bad in (stranger, other):
        with pytest.raises(ug.CellError, match="is not a parameter of cell 'RNNCell'"):
            symbolic.bptt(net, bad)
    with pytest.raises(ug.CellError, match="parameter tensor of cell"):
        symbolic.bptt(net, 3)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bptt_on_gated_cells_and_truncation(kind):
    cls = {"lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}[kind]
    for truncate in (None, 1):
        cell = cls(1, 2, seed=3)
        net = ug.unroll(cell, steps=3, truncate=truncate)
        out, *_ = net(np.random.default_rng(1).normal(size=(3, 1, 1)))
        loss = (out * out).sum()
        loss.backward()
        b = symbolic.bptt(net, cell.weight_hh, loss=loss)
        np.testing.assert_allclose(b.values, net.last_run.step_contributions("weight_hh"),
                                   rtol=1e-9, atol=1e-12)
        if truncate:
            assert b.factors[0] == [] and b.factors[1] == []
    if kind == "lstm":  # two states: a step hands on (h, c)
        assert b.structure(2).startswith("dL/d(h_3, c_3) · d(h_3, c_3)/dweight_hh")


# -- the chain rule through an unrolled net ----------------------------------------------------
@pytest.mark.parametrize("H", [1, 2])
@pytest.mark.parametrize("T", [1, 2, 3])
def test_chain_rule_through_an_unrolled_net(T, H):
    cell, net, loss = _rnn(T, H, seed=T)
    loss.backward()
    c = symbolic.chain_rule(loss, cell.weight_hh)
    # weight_hh is read at every step through weight_hhᵀ; from step t the loss is reached
    # through the outputs of steps t..T-1, each read twice by out * out
    assert len(c.paths) == 2 * T * (T + 1) // 2
    assert all(p[:2] == ["weight_hh", "weight_hhᵀ"] for p in c.paths)
    np.testing.assert_allclose(sum(c.values()), cell.weight_hh.grad, rtol=1e-9, atol=1e-12)
    g = symbolic.grad(loss, cell.weight_hh)
    fenv = {k: sympy.Float(v) for k, v in c.env.items()}
    done = np.array(c.doit().xreplace(fenv).evalf(), dtype=float)
    np.testing.assert_allclose(done, np.array(g.xreplace(fenv).evalf(), dtype=float),
                               rtol=1e-9)
    for p in ("bias_ih", "weight_ih"):
        cp = symbolic.chain_rule(loss, cell.parameters()[p])
        np.testing.assert_allclose(sum(cp.values()), cell.parameters()[p].grad, rtol=1e-9,
                                   atol=1e-12)


def test_chain_rule_and_grad_reach_the_inputs_and_initial_state_of_a_net():
    cell = ug.nn.RNNCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=2)
    xs = ug.tensor([[[0.5]], [[-1.0]]], requires_grad=True, name="xs")
    h0 = ug.tensor([[0.25]], requires_grad=True, name="h0")
    out, h = net(xs, h0)
    loss = (out * out).sum() + h.sum()
    loss.backward()
    for leaf in (xs, h0):
        c = symbolic.chain_rule(loss, leaf)
        np.testing.assert_allclose(sum(c.values()), leaf.grad, rtol=1e-9, atol=1e-12)
        g = np.asarray(symbolic.grad(loss, leaf), dtype=object)
        fenv = {k: sympy.Float(v) for k, v in c.env.items()}
        got = np.array([float(e.xreplace(fenv)) for e in g.reshape(-1)])
        np.testing.assert_allclose(got, leaf.grad.reshape(-1), rtol=1e-9, atol=1e-12)


def test_chain_rule_with_too_many_paths_says_what_to_use():
    cell = ug.nn.LSTMCell(1, 2, seed=0)
    net = ug.unroll(cell, steps=4)
    out, *_ = net(np.ones((4, 1, 1)))
    loss = (out * out).sum()
    with pytest.raises(ug.UnrollGraphError, match=r"symbolic.bptt\(net, param\)") as info:
        symbolic.chain_rule(loss, cell.weight_hh)
    assert "chain_rule" not in str(info.value).split(";")[1]  # no pointer back to itself


def test_hostile_names_cannot_inject_latex():
    evil = "W}\\input{x}$<b>"
    x = ug.tensor(0.5, requires_grad=True, name=evil)
    text = symbolic.chain_rule(ug.tanh(x * x), x).latex()
    assert "\\input" not in text.replace("\\textbackslash{}input", "")
    assert r"\text{W\}\textbackslash{}input\{x\}\$\textless{}b\textgreater{}}" in text
    cell = ug.Cell("c")
    xin = cell.input("x", (1,))
    h = cell.state("h", (1,))
    W = cell.param(evil, np.array([[0.5]]))
    h_next = ug.tanh(xin + h @ W.T, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    net = ug.unroll(cell, steps=2)
    out, _ = net(np.ones((2, 1, 1)))
    out.sum().backward()
    b = symbolic.bptt(net, W)
    latex = b.latex()
    assert "\\input{" not in latex and "\\textbackslash{}input\\{x\\}" in latex
    np.testing.assert_allclose(b.values, net.last_run.step_contributions(evil), rtol=1e-9)


# -- size guards: refused before any sympy expression is built ------------------------------
def _lstm_loss(T, H=2):
    cell = ug.nn.LSTMCell(2, H, seed=0)
    net = ug.unroll(cell, steps=T)
    out, _ = net(np.ones((T, 1, 2)))
    loss = (out * out).sum()
    loss.backward()
    return cell, net, loss


@pytest.fixture
def no_sympy_building(monkeypatch):
    """Any attempt to build a sympy expression of a graph fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a sympy expression was built before the size was checked")

    monkeypatch.setattr(symbolic._Builder, "tensor", refuse)
    monkeypatch.setattr(symbolic._Builder, "unrolled", refuse)
    monkeypatch.setattr(symbolic, "_apply", refuse)


@pytest.mark.parametrize("T", [3, 5, 6])
def test_large_lstm_graphs_are_refused_before_building(T, no_sympy_building):
    cell, net, loss = _lstm_loss(T)
    calls = [("chain_rule", lambda: symbolic.chain_rule(loss, cell.weight_hh)),
             ("to_sympy", lambda: ug.to_sympy(loss)),
             ("grad", lambda: symbolic.grad(loss, cell.weight_hh))]
    for what, call in calls:
        with pytest.raises(ug.UnrollGraphError, match=what) as info:
            call()
        message = str(info.value)
        assert "symbolic.bptt(net, param)" in message and "ug.explain(loss)" in message
        assert "fewer steps" in message


def test_expression_size_estimate_is_exact_on_a_small_graph():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(2.0, requires_grad=True, name="w")
    y = ug.tanh(x * w)
    leaves, elements, tree = symbolic._estimate(y * y)
    # y*y: mul(tanh(mul(x, w)), tanh(mul(x, w))): 1 + 2 * (1 + (1 + 1 + 1))
    assert (leaves, elements, tree) == (2, 5, 9)


@pytest.mark.parametrize("kind, T, H", [("RNNCell", 3, 2), ("LSTMCell", 2, 1),
                                         ("GRUCell", 2, 1)])
def test_small_nets_below_the_guards_still_derive(kind, T, H):
    cell = getattr(ug.nn, kind)(1, H, seed=0)
    net = ug.unroll(cell, steps=T)
    out, *_ = net(np.ones((T, 1, 1)))
    loss = (out * out).sum()
    loss.backward()
    assert symbolic._estimate(loss)[2] <= symbolic.MAX_TREE
    c = symbolic.chain_rule(loss, cell.weight_hh)
    np.testing.assert_allclose(sum(c.values()), cell.weight_hh.grad, rtol=1e-9, atol=1e-12)
    assert ug.to_sympy(loss) is not None and symbolic.grad(loss, cell.weight_hh) is not None


# -- wrong-type arguments get named unrollgraph errors ------------------------------------------
def test_every_public_function_names_a_wrong_type_argument():
    cell = ug.nn.RNNCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=3)
    out, h = net(np.array([0.5, -1.0, 2.0]).reshape(3, 1, 1))
    loss = (out * out).sum()
    loss.backward()
    cases = [
        (lambda: symbolic.bptt(cell, "weight_hh"), r"net must be an unrolled net.*cell "
         r"'RNNCell' itself.*ug\.unroll"),
        (lambda: symbolic.bptt("net", "weight_hh"), "net must be an unrolled net.*got a str"),
        (lambda: symbolic.bptt(net, "weight_hh", loss=net), "loss must be a Tensor.*net"),
        (lambda: symbolic.bptt(net, "weight_hh", loss=out), "must be a scalar"),
        (lambda: ug.to_sympy(net), r"t must be a Tensor.*unrolled net 'RNNCell' itself"),
        (lambda: ug.to_sympy(3.0), "t must be a Tensor, got a float"),
        (lambda: symbolic.grad(net, cell.weight_hh), "loss must be a Tensor"),
        (lambda: symbolic.grad(loss, "weight_hh"), "wrt must be a Tensor, got a str"),
        (lambda: symbolic.chain_rule(cell, cell.weight_hh), "loss must be a Tensor.*cell"),
        (lambda: symbolic.chain_rule(loss, "weight_hh"), "wrt must be a Tensor"),
        (lambda: symbolic.chain_rule(loss, ug.tensor(1.0, requires_grad=True)),
         "is not a leaf of the loss's graph"),
        (lambda: symbolic.bptt(net, "weight_hh").structure(3), "from 0 to 2, got 3"),
        (lambda: symbolic.bptt(net, "weight_hh").structure("0"), "must be a step"),
    ]
    for call, words in cases:
        with pytest.raises(ug.UnrollGraphError, match=words):
            call()


def test_bptt_says_the_loss_is_not_from_the_last_run():
    cell = ug.nn.RNNCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=3)
    out, h = net(np.array([0.5, -1.0, 2.0]).reshape(3, 1, 1))
    loss = (out * out).sum()
    loss.backward()
    net(np.zeros((3, 1, 1)))
    with pytest.raises(ug.UnrollGraphError, match="not from the net's last run") as info:
        symbolic.bptt(net, "weight_hh", loss=loss)
    assert "backward() first" not in str(info.value)
    other = ug.unroll(ug.nn.RNNCell(1, 1, seed=1), steps=3)
    o2, _ = other(np.zeros((3, 1, 1)))
    (o2 * o2).sum().backward()
    with pytest.raises(ug.UnrollGraphError, match="reads no call of net"):
        symbolic.bptt(other, "weight_hh", loss=loss)
    fresh = ug.unroll(ug.nn.RNNCell(1, 1, seed=2), steps=3)
    with pytest.raises(ug.UnrollGraphError, match="has not been run"):
        symbolic.bptt(fresh, "weight_hh")
    fresh(np.zeros((3, 1, 1)))
    with pytest.raises(ug.UnrollGraphError, match="has had no backward pass"):
        symbolic.bptt(fresh, "weight_hh")



def test_latex_for_slides_dots_products_drops_unit_factors_and_sets_names_upright():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(2.0, requires_grad=True, name="weight_hh")
    b = ug.tensor(1.0, requires_grad=True, name="b")
    loss = ug.tanh(x * w + b) * b
    c = symbolic.chain_rule(loss, w)
    assert any(f == 1 for f in c.products[0].args)  # the expression keeps d(u + b)/du = 1
    text = c.latex()
    assert r" \cdot " in text and r"\cdot 1 " not in text and not text.startswith("1 ")
    assert r"\mathrm{weight}_{\mathrm{hh}}" in text and "weight_{hh}" not in text
    loss.backward()
    assert np.isclose(sum(c.values()), float(w.grad))  # the value unchanged
    cell, net, loss = _rnn(3, 1)
    loss.backward()
    text = symbolic.bptt(net, cell.weight_hh, loss=loss).latex()
    lines = text.splitlines()
    assert lines[0] == r"\begin{aligned}" and lines[-1] == r"\end{aligned}"
    assert all(line.startswith(("&", r"\frac")) for line in lines[1:-1])
    # one product per line: step 0's term has three, so six lines (structure and value)
    assert sum(line.startswith(r"&\quad + ") for line in lines) == 2 * (2 + 1) + 0
    assert max(len(line) for line in lines) < 2000
