"""ug.train.Linear keeps its parameters: rebinding one is refused, in-place steps work."""

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.optim import TrainingError


@pytest.mark.parametrize("item", ["weight", "bias"])
@pytest.mark.parametrize("kind", ["array", "tensor", "computed"])
def test_rebinding_a_linear_parameter_is_refused_and_changes_nothing(item, kind):
    head = ug.train.Linear(3, 2, seed=0)
    p = getattr(head, item)
    before = p.data.copy()
    new = {"array": lambda: np.zeros(p.shape),
           "tensor": lambda: ug.tensor(np.zeros(p.shape), requires_grad=True),
           "computed": lambda: p * 2.0}[kind]()
    with pytest.raises(TrainingError, match=rf"head\.{item} = .*parameter"):
        setattr(head, item, new)
    assert getattr(head, item) is p
    assert head.parameters()[item] is p
    np.testing.assert_array_equal(p.data, before)


def test_the_pytorch_step_under_no_grad_changes_the_layers_parameter():
    head = ug.train.Linear(3, 2, seed=0)
    x = np.random.default_rng(1).normal(size=(4, 3))
    head(x).sum().backward()
    w = head.weight
    expected = w.data - 0.1 * w.grad
    with ug.no_grad():
        head.weight -= 0.1 * head.weight.grad
    assert head.weight is w
    np.testing.assert_allclose(w.data, expected, rtol=0, atol=0)
