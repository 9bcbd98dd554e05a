"""An op a user registers with ``ops.defop`` behaves as the library's own in an unrolled net."""

from __future__ import annotations

import numpy as np

import unrollgraph as ug
from unrollgraph import ops
from unrollgraph.tensor import apply


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
