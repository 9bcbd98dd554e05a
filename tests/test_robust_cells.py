"""What a user of cells gets wrong, and the message that says how to do it right: a loss
inside a cell, inputs and initial states of another float type than the cell's."""

from __future__ import annotations

import re

import numpy as np
import pytest

import unrollgraph as ug


def _elman(classes=3):
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state("h", (classes,))
    W = cell.param("W", np.full((classes, 2), 0.1))
    logits = ug.tanh(x @ W.T + h, name="logits")
    cell.feedback(h, logits)
    return cell, logits


LOSSES = {
    "cross_entropy": (lambda y: ug.cross_entropy(y, np.array([1])),
                      lambda T, B: np.ones((T, B), dtype=int)),
    "mse_loss": (lambda y: ug.mse_loss(y, np.zeros((1, 3))),
                 lambda T, B: np.zeros((T, B, 3))),
    "binary_cross_entropy_with_logits": (
        lambda y: ug.binary_cross_entropy_with_logits(y, np.zeros((1, 3))),
        lambda T, B: np.zeros((T, B, 3))),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("declared", [False, True])
def test_a_loss_inside_a_cell_says_it_belongs_on_the_outputs_and_how(loss, declared):
    make, targets = LOSSES[loss]
    cell, logits = _elman()
    if declared:
        cell.output("logits", logits)
    cell.output("loss", make(logits))
    with pytest.raises(ug.CellError) as info:
        ug.unroll(cell, steps=4)
    msg = str(info.value)
    assert f"(op {loss}) is a loss" in msg
    assert "A loss belongs outside the cell" in msg
    assert f"loss = ug.{loss}(" in msg
    # (the declaration to add is named only when the value is not an output yet)
    assert ("cell.output('logits', logits)" in msg) is not declared
    # what the message says to do works: the same cell with the loss on the net's outputs
    cell, logits = _elman()
    cell.output("logits", logits)
    net = ug.unroll(cell, steps=4)
    outputs, state = net(np.ones((4, 2, 2)))
    picked = re.search(r"ug\.\w+\((outputs(\[[^]]*\])?),", msg).group(1)
    assert picked == "outputs"  # one output: the net returns it as a tensor
    value = getattr(ug, loss)(outputs, targets(4, 2))
    value.backward()
    assert cell.parameters()["W"].grad.shape == (3, 2)


def test_a_mean_over_every_axis_in_a_cell_points_at_losses_too():
    cell, logits = _elman()
    cell.output("y", logits)
    cell.output("penalty", (logits * logits).mean())
    with pytest.raises(ug.CellError, match=r"mixes the sequences of a batch.*if it computes a "
                                           r"loss, apply the loss outside the cell"):
        ug.unroll(cell, steps=2)
