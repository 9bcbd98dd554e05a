"""Backpropagation through time you can see: an Elman RNN, folded and unrolled, with gradients.

Run it with ``./dev demo`` (or ``python examples/demo.py [outdir]``). It

1. builds an Elman RNN cell h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),
2. unrolls it over T = 4 steps, runs a batch forward, takes a mean-square loss, backward,
3. draws the folded cell and the unrolled graph with its gradients (out/*.svg),
4. checks the unrolled gradients against central finite differences and against BPTT
   written by hand in numpy, and exits with status 1 if either check fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import unrollgraph as ug

T, B, D, H = 4, 2, 3, 3
TOL = 1e-6


def loss_of(net, xs, target):
    outputs, _ = net(xs)
    return ug.mse_loss(outputs, target)


def numpy_bptt(params, xs, target):
    """BPTT for the Elman RNN written out by hand: forward, then the backward recursion
    dL/dh_t = dL/dy_t + dL/dh_{t+1}·(1 - h_{t+1}²) W_hh, summing each step's share of the
    shared weights' gradients."""
    W_ih, W_hh, b_ih, b_hh = (params[k] for k in ("weight_ih", "weight_hh", "bias_ih",
                                                   "bias_hh"))
    hs = [np.zeros((xs.shape[1], W_hh.shape[0]))]
    for t in range(len(xs)):
        hs.append(np.tanh(xs[t] @ W_ih.T + b_ih + hs[-1] @ W_hh.T + b_hh))
    ys = np.stack(hs[1:])
    dy = 2.0 * (ys - target) / ys.size  # d mean((y - target)²) / dy
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dh_next = np.zeros_like(hs[0])  # gradient arriving from step t+1
    for t in reversed(range(len(xs))):
        dh = dy[t] + dh_next
        dz = dh * (1.0 - hs[t + 1] ** 2)
        grads["weight_ih"] += dz.T @ xs[t]
        grads["weight_hh"] += dz.T @ hs[t]
        grads["bias_ih"] += dz.sum(axis=0)
        grads["bias_hh"] += dz.sum(axis=0)
        dh_next = dz @ W_hh
    return grads


def finite_differences(cell, net, xs, target, eps=1e-6):
    """Central differences of the loss with respect to every parameter element."""
    out = {}
    for name, p in cell.parameters().items():
        orig = p.data  # a parameter's value is read-only: it changes by assigning p.data
        g = np.zeros_like(orig)
        for i in np.ndindex(orig.shape):
            step = np.zeros_like(orig)
            step[i] = eps
            p.data = orig + step
            up = loss_of(net, xs, target).item()
            p.data = orig - step
            down = loss_of(net, xs, target).item()
            g[i] = (up - down) / (2 * eps)
        p.data = orig
        out[name] = g
    return out


def rel_err(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(a)) + np.max(np.abs(b))))


def main(outdir: str = "out") -> int:
    rng = np.random.default_rng(0)
    cell = ug.nn.RNNCell(D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    xs = rng.standard_normal((T, B, D))
    target = rng.standard_normal((T, B, H))

    loss = loss_of(net, xs, target)
    loss.name = "loss"
    loss.backward()
    grads = {k: p.grad.copy() for k, p in cell.parameters().items()}
    print(f"Elman RNN: input {D}, hidden {H}, unrolled over T = {T} steps, batch {B}")
    print(f"loss = {loss.item():.6f}")

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    drawing = ug.render(net, loss=loss, contributions=True)
    # the folded cell's .grad on the unrolled drawing's colour scale: one colour per gradient
    folded = ug.render(cell, color_scale=drawing).render(str(out / "rnn_folded"),
                                                         format="svg", cleanup=True)
    unrolled = drawing.render(str(out / "rnn_unrolled"), format="svg", cleanup=True)
    print(f"drew the folded cell:    {folded}")
    print(f"drew the unrolled graph: {unrolled}")

    ok = True
    numeric = finite_differences(cell, net, xs, target)
    by_hand = numpy_bptt(cell.state_dict(), xs, target)
    cell.zero_grad()  # the finite differences ran the net again: one more backward pass so
    loss_of(net, xs, target).backward()  # net.last_run holds this loss's gradients
    for name in grads:
        e_fd = rel_err(grads[name], numeric[name])
        e_np = rel_err(grads[name], by_hand[name])
        parts = net.last_run.step_contributions(name)
        e_sum = rel_err(parts.sum(axis=0), grads[name])
        good = max(e_fd, e_np, e_sum) < TOL
        ok &= good
        print(f"  {name:10s} finite differences {e_fd:.1e}   numpy BPTT {e_np:.1e}   "
              f"sum of {T} per-step parts {e_sum:.1e}   {'ok' if good else 'MISMATCH'}")
    print("checked: the unrolled gradients agree with central finite differences and with "
          "hand-written numpy BPTT" if ok else "FAILED: a gradient check did not pass")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
