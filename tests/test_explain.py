"""ug.explain: the narrated backward walk has the order and the numbers of backward()."""

import json
import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

tensor_mod = sys.modules["unrollgraph.tensor"]


def _leaf_sums(ex, leaves):
    for t in leaves:
        parts = ex.contributions(t.node)
        assert parts, f"{t.name} received nothing"
        np.testing.assert_allclose(sum(parts), t.grad, rtol=1e-10, atol=1e-12)


def _reverse_topological(ex):
    pos = {id(r.node): k for k, r in enumerate(ex.records)}
    for r in ex.records:
        for loc in r.locals:
            if id(loc.input) in pos:
                assert pos[id(loc.input)] > r.index, (r.label, ex.name(loc.input))


def test_x_times_x_has_two_contributions():
    x = ug.tensor(3.0, requires_grad=True, name="x")
    y = x * x
    ex = ug.explain(y)
    y.backward()
    parts = ex.contributions(x.node)
    assert [float(p) for p in parts] == [3.0, 3.0]
    assert float(sum(parts)) == float(x.grad) == 6.0
    rec = ex[0]
    assert [loc.formula for loc in rec.locals] == ["d(x * x)/dx (input 0) = x",
                                                   "d(x * x)/dx (input 1) = x"]
    total, got, left = rec.totals[x.node]
    assert (float(total), got, left) == (6.0, 2, 0)
    assert float(rec.sent[x.node]) == 6.0
    assert "x running total 6 (2 of 2; last one)" in ex.table()


def test_explain_changes_no_gradient():
    x = ug.tensor([1.0, 2.0], requires_grad=True, name="x")
    y = (ug.tanh(x) * 2).sum()
    ug.explain(y)
    assert x.grad is None


def test_tanh_local_derivative_value():
    z = ug.tensor(0.3, requires_grad=True, name="z")
    y = ug.tanh(z)
    rec = ug.explain(y)[0]
    assert rec.locals[0].formula == "d tanh(z)/dz = 1 - tanh(z)^2"
    assert np.isclose(rec.locals[0].value, 1 - np.tanh(0.3) ** 2)


class _Recording(dict):
    def __init__(self, base):
        super().__init__(base)
        self.seen = []

    def __getitem__(self, key):
        self.seen.append(key)
        return super().__getitem__(key)


def _order_of_backward(loss, monkeypatch):
    rec = _Recording(tensor_mod._REGISTRY)
    monkeypatch.setattr(tensor_mod, "_REGISTRY", rec)
    loss.backward()
    monkeypatch.undo()
    return rec.seen


def _random_graph(seed, depth):
    """Leaves a, b, w and a scalar loss over ``depth`` random layers of them: values used
    twice, broadcasting, one weight read by two matmuls, reductions broadcast back."""
    rng = np.random.default_rng(seed)
    a = ug.tensor(rng.normal(size=(2, 3)), requires_grad=True, name="a")
    b = ug.tensor(rng.normal(size=(3,)), requires_grad=True, name="b")
    w = ug.tensor(rng.normal(size=(3, 2)), requires_grad=True, name="w")
    h = a
    for _ in range(depth):
        choice = rng.integers(0, 6)
        if choice == 0:
            h = h * h
        elif choice == 1:
            h = ug.tanh(h + b)  # broadcast
        elif choice == 2:
            h = ug.sigmoid(h) * a
        elif choice == 3:
            h = (h @ w) @ w.T  # matmul twice through one weight
        elif choice == 4:
            h = h - h.mean(axis=0)  # a reduction broadcast back
        else:
            h = h / (1.0 + h * h)
    return (a, b, w), (h * h).sum() + b.sum()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_random_graphs_sum_to_grad_in_backward_order(seed, depth):
    (a, b, w), loss = _random_graph(seed, depth)
    ex = ug.explain(loss)
    mp = pytest.MonkeyPatch()
    try:
        ops = _order_of_backward(loss, mp)
    finally:
        mp.undo()
    assert [r.op for r in ex if r.locals] == ops
    _reverse_topological(ex)
    tensors, stack = {}, [loss]  # the same numbers: every intermediate keeps its gradient
    while stack:
        t = stack.pop()
        if id(t.node) not in tensors:
            tensors[id(t.node)] = t
            stack.extend(t._parents)
    for r in ex:
        if r.locals:
            np.testing.assert_allclose(r.upstream, tensors[id(r.node)].grad, rtol=1e-12)
    _leaf_sums(ex, [t for t in (a, b, w) if t.grad is not None])


def _net(kind, T, truncate=None, H=2):
    cell = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}[kind](
        2, H, seed=1)
    net = ug.unroll(cell, steps=T, truncate=truncate)
    xs = ug.tensor(np.random.default_rng(0).normal(size=(T, 3, 2)), requires_grad=True,
                   name="xs")
    out, h = net(xs)
    h = h[0] if isinstance(h, tuple) else h  # an LSTM's (h, c)
    loss = (out * out).mean() + h.sum()
    return cell, net, xs, loss


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unrolled_contributions_sum_to_grads(kind):
    cell, net, xs, loss = _net(kind, 4)
    ex = ug.explain(loss)
    loss.backward()
    _leaf_sums(ex, list(cell.parameters().values()) + [xs])
    _reverse_topological(ex)
    run = net.last_run
    checked = 0
    for r in ex:
        if r.step is not None:
            np.testing.assert_allclose(r.upstream, run.grad(r.node), rtol=1e-9, atol=1e-12)
            checked += 1
    assert checked > 4 * 5
    # back through time: step T-1 first, step 0 last
    steps = [r.step for r in ex if r.step is not None]
    assert steps[0] == 3 and steps[-1] == 0 and steps == sorted(steps, reverse=True)


def test_shared_weight_running_sum_grows_one_step_at_a_time():
    cell, net, xs, loss = _net("rnn", 3, H=1)
    ex = ug.explain(loss)
    loss.backward()
    bias = cell.bias_hh.node
    seen = [(r.step, r.totals[bias]) for r in ex if bias in r.totals]
    assert [s for s, _ in seen] == [2, 1, 0]
    assert [(got, left) for _, (_, got, left) in seen] == [(1, 2), (2, 1), (3, 0)]
    parts = net.last_run.step_contributions("bias_hh")
    np.testing.assert_allclose([tot for _, (tot, _, _) in seen], np.cumsum(parts[::-1], 0))
    np.testing.assert_allclose(seen[-1][1][0], cell.bias_hh.grad)


def test_truncated_nodes_are_listed_as_skipped():
    cell, net, xs, loss = _net("rnn", 5, truncate=2)
    ex = ug.explain(loss)
    loss.backward()
    assert ex.skipped and all("truncation" in s.reason for s in ex.skipped)
    assert all(r.step is None or r.step >= 3 for r in ex)
    _leaf_sums(ex, list(cell.parameters().values()))
    assert "skipped" in ex.table()


def test_text_outputs_fit_and_frames_highlight():
    cell, net, xs, loss = _net("lstm", 3)
    ex = ug.explain(loss)
    text = str(ex)
    assert text == ex.table()
    assert max(len(line) for line in text.splitlines()) <= 100
    md = ex.to_markdown()
    assert md.count("\n|") >= len(ex)
    frames = ex.frames()
    assert len(frames) == len(ex)
    src = frames[3].source
    assert src.count('penwidth="3"') == 1  # the current node, one of them
    assert 'style="dashed"' in src  # the rest, faded
    assert src.startswith("digraph explain")


def test_explain_refuses_a_tensor_without_grad():
    with pytest.raises(ug.GradientError, match="does not require grad"):
        ug.explain(ug.tensor(1.0))


def test_cli_explain_text_md_html(tmp_path, capsys):
    from unrollgraph.cli import main

    assert main(["explain", "rnn", "--steps", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Backward walk from L:")
    assert "step 2" in text and "step 0" in text and "running total" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    md = tmp_path / "walk.md"
    assert main(["explain", "rnn", "--steps", "3", "--format", "md", "-o", str(md)]) == 0
    assert md.read_text().startswith("| # | node | op |")
    page = tmp_path / "sub" / "walk.html"
    assert main(["explain", "lstm", "--steps", "2", "-o", str(page)]) == 0
    assert page.read_text().startswith("<!DOCTYPE html>")
    capsys.readouterr()
    assert main(["explain", "gru", "--format", "html"]) == 2
    assert "give it a file with -o" in capsys.readouterr().err


def test_cli_explain_a_script_cell(tmp_path, capsys):
    from unrollgraph.cli import main

    script = tmp_path / "mycell.py"
    script.write_text("import unrollgraph as ug\ncell = ug.nn.RNNCell(1, 2, seed=3)\n")
    assert main(["explain", f"{script}:cell", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "h_next@1" in out and "weight_hh" in out
    assert main(["explain", f"{script}:nothing"]) == 2
    assert "defines no 'nothing'" in capsys.readouterr().err


def test_chain_rule_tutorial_runs_and_its_page_is_current(tmp_path, monkeypatch):
    import contextlib
    import io
    import json
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
    page = docs / "chain-rule.md"
    text = page.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    assert all(b.startswith("# continues the block") for b in blocks[1:])
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(block, str(page), "exec"), namespace)
    assert (tmp_path / "rnn-walk.html").exists() and (tmp_path / "chain-rule.svg").exists()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert (docs / target).exists(), target
    # the committed stepper is the walk of the tutorial's RNN, record for record

    def frames(html):
        data = re.search(r'<script type="application/json">(.*?)</script>', html, re.S)
        return [f["text"] for f in json.loads(data.group(1))["frames"]]

    committed = (docs / "chain-rule-rnn.html").read_text(encoding="utf-8")
    assert frames(committed) == frames((tmp_path / "rnn-walk.html").read_text())
    assert len(frames(committed)) == len(namespace["ex"]) == 27  # y (all steps) a record


def test_a_matmul_record_names_the_matrix_its_value_is():
    A = ug.tensor([[2.0, 3.0]], requires_grad=True, name="A")
    B = ug.tensor([[5.0], [7.0]], requires_grad=True, name="B")
    text = str(ug.explain(((A @ B) * 10.0).sum()))
    # the value printed after "=" is the matrix the upstream gradient is multiplied by
    assert "upstream @ B^T, with B^T = [5, 7]\n      sends [50, 70] to A" in text
    assert "A^T @ upstream, with A^T = [2, 3]\n      sends [20, 30] to B" in text


def test_a_non_scalar_is_refused_as_backward_refuses_it():
    x = ug.tensor([1.0, 2.0], requires_grad=True, name="x")
    with pytest.raises(ug.GradientError, match=r"scalar.*y.sum\(\)"):
        ug.explain(x * x)


# -- names: the diagrams' names, ids only where two nodes would read the same ---------------------
_ID = re.compile(r"(?<![#\w])[ne]\d+\b")  # a bare generated id such as n8 or e7


def _rnn_loss(T=3, H=1):
    cell = ug.nn.RNNCell(1, H, seed=0)
    net = ug.unroll(cell, steps=T)
    out, h = net(np.linspace(-1, 1, T).reshape(T, 1, 1))
    loss = (out * out).sum()
    loss.name = "loss"
    loss.backward()
    return cell, net, loss


def test_explain_prints_the_names_the_diagrams_draw():
    cell, net, loss = _rnn_loss()
    ex = ug.explain(loss)
    diagram = ug.to_dot(net, loss=loss, detail="ops")
    assert "weight_hhᵀ" in diagram and "weight_ihᵀ" in diagram
    page = ex.to_html()
    data = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page,
                                re.S).group(1))
    shown = {  # what a reader sees: DOT labels, SVG text, the stepper's record text
        "table": ex.table(), "str": str(ex), "markdown": ex.to_markdown(),
        "frames": "\n".join(re.findall(r'label=<(.*?)>[ \]]', "".join(
            f.source for f in ex.frames()))),
        "svg": "\n".join(re.findall(r"<text[^>]*>(.*?)</text>", page)),
        "stepper": "\n".join(f["text"] for f in data["frames"]),
    }
    for where, text in shown.items():
        assert "weight_hhᵀ" in text and "weight_ihᵀ" in text, where
        assert not _ID.search(text), (where, _ID.search(text))
    # weight_hh's per-step parts arrive at its transpose, which sends their sum on
    wT = net.graph.nodes[[ex.name(n) for n in net.graph.nodes].index("weight_hhᵀ")]
    assert len(ex.contributions(wT)) == 3
    (last,) = [r for r in ex if r.node is wT]
    assert last.locals[0].input is cell.weight_hh.node


def test_names_are_unique_and_suffixed_only_where_they_clash():
    cell, net, loss = _rnn_loss()
    ex = ug.explain(loss)
    names = [ex.name(n) for n in ex.nodes]
    assert len(set(names)) == len(names)
    bases = [n.split("#")[0] for n in names]
    for name, base in zip(names, bases):
        assert ("#" in name) == (bases.count(base) > 1), name
    assert "h_next@2" in names and "+@2#n12" in names  # two adds per step: told apart


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "×", "+#n1", "x@1", "a#n0"]), min_size=2,
                max_size=5))
def test_user_names_never_make_two_nodes_read_the_same(leaf_names):
    leaves = [ug.tensor(0.3 + 0.1 * k, requires_grad=True, name=nm)
              for k, nm in enumerate(leaf_names)]
    y = leaves[0]
    for t in leaves[1:]:
        y = y * t + t
    ex = ug.explain(y)
    names = [ex.name(n) for n in ex.nodes]
    assert len(set(names)) == len(names), names
    for t in leaves:  # a name used once is printed as written
        if leaf_names.count(t.name) == 1 and t.name not in ("×",) and "#" not in t.name:
            assert ex.name(t.node) == t.name


def test_formulas_name_the_real_inputs_even_leaves_called_a_and_b():
    a = ug.tensor(2.0, requires_grad=True, name="a")
    b = ug.tensor(5.0, requires_grad=True, name="b")
    y = b * a - a / b
    ex = ug.explain(y)
    formulas = {(r.label, ex.name(loc.input)): (loc.formula, float(loc.value))
                for r in ex for loc in r.locals}
    mul = [r for r in ex if r.op == "mul"][0].label
    div = [r for r in ex if r.op == "div"][0].label
    assert formulas[(mul, "b")] == ("d(b * a)/db = a", 2.0)
    assert formulas[(mul, "a")] == ("d(b * a)/da = b", 5.0)
    assert formulas[(div, "a")] == ("d(a / b)/da = 1/b", 0.2)
    assert formulas[(div, "b")][0] == "d(a / b)/db = -a/b^2"
    assert np.isclose(formulas[(div, "b")][1], -2.0 / 25.0)
    # an unnamed input is named as the diagrams name it, in parentheses
    z = ug.tanh(a * b)
    (rec,) = [r for r in ug.explain(z) if r.op == "tanh"]
    assert rec.locals[0].formula == "d tanh(×)/d(×) = 1 - tanh(×)^2"


# -- every gradient arriving at a node is a recorded contribution ------------------------------
def _assert_every_node_adds_up(ex):
    """For every record, what it received sums to its upstream; every node sent to has a
    record (or is listed as skipped) and is drawn, along an edge of the picture; running
    totals are the sums so far."""
    recorded = {id(r.node) for r in ex}
    skipped = {id(s.node) for s in ex.skipped}
    drawn = {id(n) for n in ex.nodes}
    edges = {(id(a), id(b), k) for a, b, k in ex.edges}
    for r in ex:
        assert id(r.node) in drawn, r.label
        parts = ex.contributions(r.node)
        if r.node is ex.loss:
            assert parts == [] and np.all(r.upstream == 1)
            continue
        assert parts, f"{r.label} receives its upstream from no record"
        np.testing.assert_allclose(sum(parts), r.upstream, rtol=1e-12, atol=1e-15,
                                   err_msg=r.label)
    so_far: dict = {}
    for r in ex:
        for loc in r.locals:
            assert id(loc.input) in recorded | skipped, ex.name(loc.input)
            assert (id(loc.input), id(r.node), loc.index) in edges
            so_far.setdefault(id(loc.input), []).append(loc.sent)
            np.testing.assert_allclose(loc.total, sum(so_far[id(loc.input)]), rtol=1e-12)
            assert loc.received == len(so_far[id(loc.input)])
            assert loc.received + loc.remaining == len(ex.contributions(loc.input))
    joined = recorded | {i for a, b, _ in ex.edges for i in (id(a), id(b))}
    assert all(id(n) in joined for n in ex.nodes), "a node stands alone in the picture"
    names = {ex.name(n) for n in ex.nodes}
    text = str(ex)
    for m in re.finditer(r"sends .* to (.*)$", text, re.M):
        assert m.group(1) in names, m.group(1)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 5))
def test_every_node_of_random_eager_graphs_adds_up(seed, depth):
    _, loss = _random_graph(seed, depth)
    _assert_every_node_adds_up(ug.explain(loss))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("truncate", [None, 2])
def test_every_node_of_unrolled_nets_adds_up(kind, truncate):
    cell, net, xs, loss = _net(kind, 4, truncate=truncate)
    _assert_every_node_adds_up(ug.explain(loss))
    # the initial state given, requiring grad; both outputs of an LSTM used
    cls = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}[kind]
    cell = cls(1, 2, seed=2)
    net = ug.unroll(cell, steps=3, truncate=truncate)
    init = tuple(ug.tensor(np.full((1, 2), 0.1 * (k + 1)), requires_grad=True,
                           name=f"s{k}") for k in range(len(cell.states)))
    out, *finals = net(np.ones((3, 1, 1)), init if len(init) > 1 else init[0])
    loss = (out * out).sum()
    for f in finals:
        for s in (f if isinstance(f, tuple) else (f,)):
            loss = loss + (s * s).sum()
    _assert_every_node_adds_up(ug.explain(loss))


def test_the_outputs_record_hands_each_step_its_part():
    cell = ug.nn.RNNCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=3)
    out, h = net(np.array([0.5, -1.0, 2.0]).reshape(3, 1, 1))
    loss = (out * out).sum()
    loss.backward()
    ex = ug.explain(loss)
    by_label = {r.label: r for r in ex}
    stacked = by_label["y (all steps)"]
    assert stacked.node in ex.nodes
    last = by_label["h_next@2"]
    (part,) = ex.contributions(last.node)  # from the loss, through the stacked outputs
    np.testing.assert_allclose(part, last.upstream)
    one = by_label["h_next@1"]
    parts = ex.contributions(one.node)
    assert len(parts) == 2  # from the loss, then carried back from step 2
    np.testing.assert_allclose(parts[0], stacked.upstream[1])
    np.testing.assert_allclose(sum(parts), one.upstream)
    text = str(ex)
    assert "h_next@1 running total" in text and "(1 of 2; 1 more to come)" in text
    assert "(2 of 2; last one)" in text


def _in_order(text, parts):
    at = 0
    for p in parts:
        at = text.find(p, at)
        assert at >= 0, p
        at += len(p)


def test_every_format_prints_the_same_running_totals():
    y = ug.tanh(ug.tensor(1.0, requires_grad=True, name="z"))
    y.name = "y"
    ex = ug.explain(y * y)
    md = ex.to_markdown()
    rows = [line for line in md.splitlines() if line.startswith("| 0 |")]
    assert "0.7616 → y (running total 0.7616 (1 of 2; 1 more to come))" in rows[0]
    assert "0.7616 → y (running total 1.523 (2 of 2; last one))" in rows[0]
    assert "y running total 0.7616 (1 of 2; 1 more to come)" in str(ex)
    cell, net, xs, loss = _net("lstm", 3)
    for walk in (ex, ug.explain(loss)):
        notes = [f"{walk.name(loc.input)} {loc.running()}" for r in walk for loc in r.locals
                 if loc.running() is not None]
        assert notes
        _in_order(str(walk), notes)
        _in_order(walk.to_markdown(), [loc.running().replace("|", "&#124;") for r in walk
                                       for loc in r.locals if loc.running() is not None])
        page = walk.to_html()
        data = re.search(r'<script type="application/json">(.*?)</script>', page, re.S)
        # (the stepper writes the names the diagrams draw: +@2 [4] where the text has +@2#n12)
        notes = [f"{walk._reader_name(loc.input)} {loc.running()}" for r in walk
                 for loc in r.locals if loc.running() is not None]
        _in_order("\n".join(f["text"] for f in json.loads(data.group(1))["frames"]), notes)


def test_wrong_type_arguments_get_named_errors(tmp_path):
    cell = ug.nn.RNNCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=3)
    out, h = net(np.array([0.5, -1.0, 2.0]).reshape(3, 1, 1))
    loss = (out * out).sum()
    ex = ug.explain(loss)
    cases = [
        (lambda: ug.explain(net), r"loss must be a Tensor.*unrolled net 'RNNCell'.*net\(xs\)"),
        (lambda: ug.explain(cell), "loss must be a Tensor.*cell 'RNNCell'"),
        (lambda: ug.explain(np.ones(())), "loss must be a Tensor.*ndarray"),
        (lambda: ug.explain(out * out), "reduce it first"),
        (lambda: ex.contributions(3), "node must be a Node.*got int"),
        (lambda: ex.contributions("nowhere"), "no node of this walk is named 'nowhere'"),
        (lambda: ex.name([1]), "node must be a Node.*got list"),
        (lambda: ex.table(width="wide"), "width must be an int"),
        (lambda: ex.table(width=True), "width must be an int"),
        (lambda: ex.to_html(path=3), "path must be a file name"),
        (lambda: ex.to_html(title=["t"]), "title must be a str"),
    ]
    for call, words in cases:
        with pytest.raises(ug.GradientError, match=words):
            call()
    # a tensor, or the name the walk prints, stands for its node
    (last,) = [r for r in ex if r.label == "h_next@2"]
    assert len(ex.contributions("h_next@2")) == 1
    np.testing.assert_allclose(sum(ex.contributions("h_next@2")), last.upstream)
    assert ex.contributions(cell.bias_hh) == ex.contributions(cell.bias_hh.node)
    assert ex.name(cell.weight_hh) == "weight_hh"


def test_the_explain_docstring_promises_what_it_does():
    doc = ug.explain.__doc__
    assert "any tensor" not in doc and "seeded with ones" not in doc
    y = ug.tensor([1.0, 2.0], requires_grad=True) * 2.0
    with pytest.raises(ug.GradientError, match=r"y.sum\(\)|reduce it first"):
        ug.explain(y)
    assert len(ug.explain(y.sum())) > 0


def test_narration_repeats_no_value_and_writes_no_double_transpose():
    cell, net, xs, loss = _net("lstm", 2, H=1)
    for ex in (ug.explain(loss), _rnn_explanation_of(ug.nn.RNNCell(1, 1, seed=0))):
        text, md = str(ex), ex.to_markdown()
        for out in (text, md):
            assert not re.search(r"= (\S+) (\([^)]*\) )?= \1(\s|$|<)", out)
            assert "ᵀ^T" not in out
        assert "upstream @ weight_hh, with weight_hh" in text


def _rnn_explanation_of(cell):
    net = ug.unroll(cell, steps=3)
    out, h = net(np.array([0.5, -1.0, 2.0]).reshape(3, 1, 1))
    return ug.explain((out * out).sum())
