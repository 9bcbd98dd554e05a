"""A diagram's ∇ total is the drawn run's gradient; when a parameter's ``.grad`` holds a
different one (the sum of several backward() calls, a later call's gradient, or a loss term
outside the net), the legend says so, in words true of each of those."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug

NOTE = "a different one"


def _net(kind):
    cell = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell}[kind](2, 2, seed=0)
    return ug.unroll(cell, steps=3)


def _backward(net, extra=False):
    out, _ = net(np.random.default_rng(0).normal(size=(3, 1, 2)))
    loss = (out * out).sum()
    if extra:
        w = net.cell.weight_hh
        loss = loss + (w * w).sum()
    loss.backward()
    return loss


@pytest.mark.parametrize("detail", ["textbook", "ops", "steps"])
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_the_legend_says_when_grad_holds_more_than_the_drawn_run(kind, detail):
    net = _net(kind)
    loss = _backward(net)
    assert NOTE not in ug.to_dot(net, loss=loss, detail=detail)
    loss = _backward(net)  # no zero_grad(): .grad is twice the run's
    src = ug.to_dot(net, loss=loss, detail=detail)
    assert NOTE in src and "every parameter" in src
    net.zero_grad()
    loss = _backward(net)
    assert NOTE not in ug.to_dot(net, loss=loss, detail=detail)


def test_a_loss_term_outside_the_net_names_the_one_parameter_it_reads():
    net = _net("rnn")
    loss = _backward(net, extra=True)
    src = ug.to_dot(net, loss=loss, detail="textbook")
    assert "weight_hh.grad holds a different one" in src
    assert "bias_hh.grad" not in src


def test_the_note_is_true_when_grad_holds_less_a_later_runs_gradient():
    """Full BPTT drawn after a truncated run of the same cell filled .grad: .grad is smaller
    than the drawn totals, and the note must not say it holds more."""
    cell = ug.nn.RNNCell(2, 2, seed=0)
    xs = np.random.default_rng(3).standard_normal((8, 1, 2))
    full = ug.unroll(cell, 8)
    out, _ = full(xs)
    loss = (out * out).sum()
    loss.backward()
    cell.zero_grad()
    tr = ug.unroll(cell, 8, truncate=2)
    o, _ = tr(xs)
    (o * o).sum().backward()
    src = ug.to_dot(full, loss=loss, detail="textbook")
    assert NOTE in src and "a later call" in src and "holds more" not in src
