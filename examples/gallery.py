"""Regenerate the pictures of docs/gallery.md (docs/img/*.svg).

Run ``python examples/gallery.py [outdir] [--png]`` from the repository root; ``--png`` also
writes a PNG next to each SVG (handy to look at them). Needs Graphviz's ``dot``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import unrollgraph as ug


def scalar_chain():
    """The chain rule on scalars: y = tanh(x·w + b), local derivatives on the edges."""
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(-1.5, requires_grad=True, name="w")
    b = ug.tensor(0.25, requires_grad=True, name="b")
    y = ug.tanh(x * w + b)
    y.name = "y"
    y.backward()
    return ug.render(y, derivatives=True, highlight=x)


def _run(cell, T, seed=0, truncate=None, last_only=False):
    net = ug.unroll(cell, steps=T, truncate=truncate)
    rng = np.random.default_rng(seed)
    D = next(iter(cell.inputs.values())).shape[1]
    xs = rng.standard_normal((T, 1, D))
    outputs, _ = net(xs)
    if last_only:
        loss = (outputs[-1] * outputs[-1]).sum()
    else:
        loss = ug.mse_loss(outputs, np.zeros(outputs.shape))
    loss.name = "L"
    loss.backward()
    return net, loss


def cell_loss():
    """A cell that computes its own loss at each step, against a target input."""
    cell = ug.Cell("rnn_with_cost")
    x = cell.input("x", (2,))
    target = cell.input("target", (2,))
    h = cell.state("h", (2,))
    U = cell.param("U", np.array([[0.5, -0.2], [0.1, 0.4]]))
    W = cell.param("W", np.array([[0.3, 0.1], [-0.2, 0.3]]))
    h_next = ug.tanh(x @ U.T + h @ W.T, name="h_next")
    cell.feedback(h, h_next)
    d = h_next - target
    cell.output("cost", (d * d).sum(axis=-1))
    T = 4
    net = ug.unroll(cell, steps=T)
    rng = np.random.default_rng(0)
    cost, _ = net({"x": rng.standard_normal((T, 1, 2)),
                   "target": 0.5 * rng.standard_normal((T, 1, 2))})
    loss = cost.sum()
    loss.name = "L"
    loss.backward()
    return ug.render(net, loss=loss, detail="textbook")


def pictures():
    """name -> Digraph, in the order of the gallery."""
    out = {}
    rnn = ug.nn.RNNCell(2, 2, seed=0)
    net, loss = _run(rnn, 4)
    out["rnn_textbook"] = ug.render(net, loss=loss, detail="textbook", folded=True)
    net_l, loss_l = _run(ug.nn.RNNCell(2, 2, seed=0), 4, last_only=True)
    out["rnn_textbook_last"] = ug.render(net_l, loss=loss_l, detail="textbook", values=False)
    for name, cls in (("lstm", ug.nn.LSTMCell), ("gru", ug.nn.GRUCell)):
        cell = cls(2, 2, seed=0)
        net2, loss2 = _run(cell, 4)
        out[f"{name}_textbook"] = ug.render(net2, loss=loss2, detail="textbook", values=False)
        out[f"{name}_textbook_folded"] = ug.render(cell, detail="textbook")
    out["scalar_chain"] = scalar_chain()
    unrolled = ug.render(net, loss=loss, contributions=True)
    # after the run: the parameters' .grad, on the unrolled picture's colour scale
    out["rnn_folded"] = ug.render(rnn, color_scale=unrolled)
    out["rnn_unrolled"] = unrolled
    out["rnn_unrolled_dark"] = ug.render(net, loss=loss, theme="dark", values=False)
    lstm = ug.nn.LSTMCell(2, 2, seed=0)
    out["lstm_folded"] = ug.render(lstm)
    net, loss = _run(lstm, 2)
    out["lstm_unrolled"] = ug.render(net, loss=loss, values=False)
    net, loss = _run(ug.nn.LSTMCell(2, 2, seed=0), 1000)
    out["lstm_long_elided"] = ug.render(net, loss=loss, values=False)
    rnn = ug.nn.RNNCell(2, 2, seed=0)
    net, loss = _run(rnn, 8)
    out["bptt_full"] = ug.render(net, loss=loss, detail="steps", values=False)
    net_t, loss_t = _run(rnn, 8, truncate=3)
    out["bptt_truncated"] = ug.render(net_t, loss=loss_t, detail="steps", values=False)
    out["bptt_side_by_side"] = ug.render_side_by_side(
        net, net_t, labels=("full BPTT", "truncated BPTT, k = 3"), loss=(loss, loss_t),
        detail="textbook", values=False)
    net_e, loss_e = _run(ug.nn.RNNCell(2, 2, seed=0), 30)
    out["rnn_textbook_elided"] = ug.render(net_e, loss=loss_e, detail="textbook", values=False)
    out["cell_loss_textbook"] = cell_loss()
    net_p, loss_p = _run(ug.nn.RNNCell(2, 2, seed=0), 4)
    out["rnn_print"] = ug.render(net_p, loss=loss_p, detail="textbook", theme="print",
                                 values=False)
    net_s, loss_s = _run(ug.nn.RNNCell(2, 2, seed=0), 16)
    out["rnn_slide_16"] = ug.render(net_s, loss=loss_s, detail="textbook", theme="print",
                                    compact=True)
    small = ug.nn.RNNCell(2, 4, seed=0)
    small.load_state_dict({k: 0.4 * v for k, v in small.state_dict().items()})
    net, loss = _run(small, 16, last_only=True)
    out["vanishing"] = ug.render(net, loss=loss, detail="steps", values=False, max_elements=1)
    return out


def main(argv) -> int:
    png = "--png" in argv
    args = [a for a in argv if a != "--png"]
    outdir = Path(args[0] if args else "docs/img")
    outdir.mkdir(parents=True, exist_ok=True)
    for name, graph in pictures().items():
        path = graph.render(str(outdir / name), format="svg", cleanup=True)
        if png:
            graph.render(str(outdir / name), format="png", cleanup=True)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
