"""Run accessors: what they take, and their refusal once the run's parameters have changed."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug


def _trained_run(keep="needed"):
    cell = ug.nn.RNNCell(3, 4, seed=0)
    net = ug.unroll(cell, 5, keep=keep)
    xs = np.random.default_rng(0).normal(size=(5, 2, 3))
    y, _ = net(xs)
    (y * y).sum().backward()
    return cell, net, y


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_step_contributions_after_an_optimizer_step_is_refused(keep):
    """The report's case: the per-step parts silently used the new weights (off by 0.96)."""
    cell, net, _ = _trained_run(keep)
    run = net.last_run
    before = run.step_contributions("weight_hh")
    np.testing.assert_allclose(before.sum(0), cell.weight_hh.grad, rtol=1e-10, atol=1e-12)
    grads_before = run.state_grads()
    ug.optim.SGD(cell.parameters(), lr=0.5).step()
    sgd = (r"^Run.step_contributions\(\): the parameter '\w+' of 'RNNCell' has changed since "
           r"the run \(an SGD step\)")
    with pytest.raises(ug.UnrollGraphError, match=sgd):
        run.step_contributions("weight_hh")
    with pytest.raises(ug.UnrollGraphError, match=r"^Run.value\(\): .* has changed since"):
        run.value(cell.weight_hh)  # a parameter's slot holds its live array
    if keep == "needed":
        with pytest.raises(ug.UnrollGraphError, match=r"^Run.full\(\): .* has changed since"):
            run.full()
    # what the run kept, computed before the step, is still its own: state_grads reads only
    # the run's gradients and masks
    np.testing.assert_array_equal(run.state_grads(), grads_before)
    # calling the net again gives a fresh run that answers
    y, _ = net(run.xs["x"].data)
    (y * y).sum().backward()
    assert net.last_run.step_contributions("weight_hh").shape == (5, 4, 4)


def test_an_assignment_to_data_or_a_loaded_state_dict_is_refused_too():
    cell, net, _ = _trained_run()
    run = net.last_run
    cell.bias_hh.data = cell.bias_hh.data + 1.0
    with pytest.raises(ug.UnrollGraphError, match="bias_hh.*assignment to .data"):
        run.step_contributions("weight_ih")
    cell, net, _ = _trained_run()
    run = net.last_run
    cell.load_state_dict(cell.state_dict())
    with pytest.raises(ug.UnrollGraphError, match=r"has changed since the run \(load_state_dict\)"):
        run.full()


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_value_and_grad_take_nodes_display_names_and_parameter_tensors(keep):
    cell, net, _ = _trained_run(keep)
    run = net.last_run
    node = next(n for n in net.graph.nodes if n.name == "h_next" and n.step == 0)
    assert net.graph.display_name(node) == "h_next@0"
    np.testing.assert_array_equal(run.value("h_next@0"), run.value(node))
    np.testing.assert_array_equal(run.grad("h_next@3"),
                                  run.grad(next(n for n in net.graph.nodes
                                                if n.name == "h_next" and n.step == 3)))
    np.testing.assert_array_equal(run.value(cell.weight_hh), cell.weight_hh.data)


def test_value_and_grad_refuse_other_arguments_saying_what_to_pass():
    cell, net, y = _trained_run()
    run = net.last_run
    for bad in (None, y, 3):
        for fn in (run.value, run.grad):
            with pytest.raises(ug.GraphError, match="display name.*h_next@0"):
                fn(bad)
    with pytest.raises(ug.GraphError, match="no node .* display name"):
        run.value("h_next@99")
    with pytest.raises(ug.GraphError, match="did you mean"):
        run.value("h_next")
    other = ug.unroll(ug.nn.RNNCell(3, 4, seed=1), 5)
    with pytest.raises(ug.GraphError, match="not a node of this net"):
        run.value(other.nodes[-1])
