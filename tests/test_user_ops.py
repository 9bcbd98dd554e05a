"""An op a user registers with ``ops.defop`` behaves as the library's own in an unrolled net."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph import ops
from unrollgraph.tensor import apply

ROOT = Path(__file__).resolve().parents[1]


def test_a_user_op_keeps_what_its_vjp_reads_in_a_lean_run():
    """``defop`` records the op's doc as its doc (not as the values its VJPs read): an op
    registered without ``reads`` reads every input and its output, so a lean run (the
    default ``keep="needed"``) keeps them for its VJP, and the gradients are right."""
    name = "softsign_user_test"
    op = ops.defop(name, lambda a: a / (1.0 + np.abs(a)),
                   [lambda g, ans, a: g / (1.0 + np.abs(a)) ** 2], doc="a / (1 + |a|)")
    try:
        assert op.reads is None and op.doc == "a / (1 + |a|)"
        cell = ug.Cell("soft")
        x = cell.input("x", (2,))
        h = cell.state("h", (2,))
        w = cell.param("w", np.array([[0.5, -0.2], [0.1, 0.3]]))
        cell.feedback(h, apply(name, x + h @ w, name="h_next"))
        cell.output("y", h)
        xs = np.random.default_rng(0).standard_normal((4, 2, 2))
        for keep in ("needed", "all"):
            net = ug.unroll(cell, 4, keep=keep)
            assert ug.gradcheck(lambda w, net=net: (net(xs)[1] ** 2).sum(), [w])
    finally:
        ops._REGISTRY.pop(name, None)


def _softsign_cell(name):
    cell = ug.Cell("soft")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    cell.feedback(h, apply(name, x + h * 0.5, name="h_next"))
    cell.output("y", h)
    return cell


def test_a_user_op_is_redefined_with_replace_and_removed_with_undefop():
    name = "softsign_redefined_test"
    try:
        ops.defop(name, lambda a: a * 2.0, [lambda g, ans, a: 2.0 * g])
        with pytest.raises(ug.GraphError, match=r"already registered; pass defop\(\.\.\., "
                           r"replace=True\).*undefop\('softsign_redefined_test'\)"):
            ops.defop(name, lambda a: a * 3.0, [lambda g, ans, a: 3.0 * g])
        assert ops.get_op(name).forward(np.array(1.0)) == 2.0  # the refusal changed nothing
        ops.deflower(name, "torch", lambda torch, a: a * 2.0)
        op = ops.defop(name, lambda a: a / (1.0 + np.abs(a)),
                       [lambda g, ans, a: g / (1.0 + np.abs(a)) ** 2], replace=True)
        assert ops.get_op(name) is op and op.lower == {}  # replaced whole, rules included
        xs = np.random.default_rng(0).standard_normal((3, 2, 2))
        _, h = ug.unroll(_softsign_cell(name), 3)(xs)
        want = np.zeros((2, 2))
        for x in xs:
            a = x + want * 0.5
            want = a / (1.0 + np.abs(a))
        np.testing.assert_allclose(h.data, want, rtol=1e-14)
        assert ops.undefop(name) is op and name not in ops.registry()
        with pytest.raises(ug.GraphError, match=f"no op registered under '{name}'"):
            ops.undefop(name)
        ops.defop(name, lambda a: a, [lambda g, ans, a: g])  # free again
    finally:
        ops._REGISTRY.pop(name, None)


@pytest.mark.parametrize("name", sorted(ops.registry()))
def test_the_librarys_own_ops_cannot_be_redefined_or_removed(name):
    before = ops.get_op(name)
    with pytest.raises(ug.GraphError, match=f"op '{name}' is already registered and cannot "
                                            "be redefined: it is one of unrollgraph's own ops"):
        ops.defop(name, lambda a: a, [lambda g, ans, a: g], replace=True)
    with pytest.raises(ug.GraphError, match="cannot be redefined"):
        ops.defop(name, lambda a: a, [lambda g, ans, a: g])
    with pytest.raises(ug.GraphError, match=f"op '{name}' cannot be removed: it is one of "):
        ops.undefop(name)
    assert ops.get_op(name) is before


def test_the_docs_user_op_examples_run_twice_in_one_session(tmp_path, monkeypatch):
    """The user-op examples of docs/export.md and docs/onnx.md register the same op; run
    one after the other and each twice (a notebook cell run again), they all work, and they
    leave the registry as they found it."""
    monkeypatch.chdir(tmp_path)
    before = set(ops.registry())
    blocks = []
    for page in ("export.md", "onnx.md"):
        text = (ROOT / "docs" / page).read_text()
        found = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "defop(" in b]
        assert found, f"docs/{page} has no runnable user-op example"
        blocks += found
    for block in blocks + blocks:
        exec(compile(block, "docs", "exec"), {})
    assert set(ops.registry()) == before


# -- an op whose forward raises: what the user sees ------------------------------------------

def _picky(a, *rest):
    if (np.asarray(a) < -10).any():
        raise ValueError("value below -10")  # the user's line: kept in the traceback
    return a * 1.0


@pytest.mark.parametrize("where", ["eager", "net", "checkpointed"])
def test_a_failing_forward_names_the_op_node_and_inputs_and_keeps_the_cause(where):
    """The error is an OpError (a ShapeError subclass, the documented class of forward
    failures) naming the op, the node's own name and its inputs as the printouts name them,
    with the user's exception chained as ``__cause__`` so its traceback shows the line."""
    ops.defop("picky_test", _picky, [lambda g, ans, a: g], replace=True)
    try:
        if where == "eager":
            with pytest.raises(ug.OpError) as err:
                apply("picky_test", ug.tensor(np.array([-50.0, 1.0]), name="inp"), name="mine")
            msg = str(err.value)
            assert msg == ("picky_test (node 'mine'): failed on inp (2,): "
                           "ValueError: value below -10")
        else:
            c = ug.Cell("c")
            x = c.input("x", (2,))
            h = c.state("h", (2,))
            hn = apply("picky_test", x + h, name="mine")
            c.feedback(h, hn)
            c.output("y", hn)
            net = ug.unroll(c, steps=6, checkpoint=2 if where == "checkpointed" else None)
            xs = np.ones((6, 1, 2))
            xs[4, 0, 0] = -50.0
            with pytest.raises(ug.OpError) as err:
                net(xs)
            msg = str(err.value)
            plain = ug.unroll(c, steps=6)
            add = plain.graph.display_name(
                next(n for n in plain.nodes if n.op == "add" and n.step == 4))
            assert add.startswith("n") and add.endswith("@4") and "<" not in msg
            assert msg.startswith("unrolled cell 'c', step 4: picky_test (mine@4) failed on "
                                  f"{add} (1, 2): ValueError: value below -10"), msg
            assert f"\n{add} = add(x@4, mine@3)" in str(plain)
        assert isinstance(err.value, ug.ShapeError) and err.value.op == "picky_test"
        cause = err.value.__cause__
        assert type(cause) is ValueError and str(cause) == "value below -10"
        frames = [f.name for f in __import__("traceback").extract_tb(cause.__traceback__)]
        assert frames[-1] == "_picky"
    finally:
        ops._REGISTRY.pop("picky_test", None)


def test_a_real_shape_mismatch_is_still_the_ops_shape_error():
    """Where the op's own check finds the operands do not fit, that ShapeError is raised
    (not an OpError): the shapes are the cause."""
    with pytest.raises(ug.ShapeError) as err:
        ug.tensor(np.ones((2, 3)), name="x") @ ug.tensor(np.ones((2, 3)), name="W")
    assert type(err.value) is ug.ShapeError
