"""ug.gradcheck of a function that runs a net unrolled with truncate=: truncated BPTT is not
the full gradient, so the check fails by design, and the message says so."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug


def _setup(truncate, checkpoint=None):
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=5, truncate=truncate, checkpoint=checkpoint)
    xs = np.random.default_rng(1).standard_normal((5, 2, 2))
    return cell, net, xs


@pytest.mark.parametrize("checkpoint", [None, 2])
def test_a_truncated_net_fails_the_check_with_the_reason_and_the_fix(checkpoint):
    cell, net, xs = _setup(2, checkpoint)
    with pytest.raises(ug.GradcheckError) as err:
        ug.gradcheck(lambda w: ug.mean(net(xs)[0] ** 2), [cell.weight_hh])
    text = str(err.value)
    assert text.startswith("gradcheck failed: d(output)/d(weight_hh)")
    assert "the unrolled net 'RNNCell' has truncate=2 of 5 steps" in text
    assert "back through its last 2 steps only" in text
    assert "truncate=None (ug.unroll(cell, steps=5))" in text


def test_a_truncated_net_with_lengths_is_named_too():
    cell, net, xs = _setup(2)
    with pytest.raises(ug.GradcheckError, match="truncate=2 of 5 steps"):
        ug.gradcheck(lambda w: ug.mean(net(xs, lengths=[5, 3])[0] ** 2), [cell.weight_hh])


def test_the_same_net_without_truncation_passes():
    cell, net, xs = _setup(None)
    assert ug.gradcheck(lambda w: ug.mean(net(xs)[0] ** 2), [cell.weight_hh])


def test_a_net_built_inside_fn_is_found_and_named_once():
    cell, _, xs = _setup(None)

    def fn(w):
        net = ug.unroll(cell, steps=5, truncate=3)
        out, h = net(xs)
        return ug.mean(out ** 2) + ug.mean(h)

    with pytest.raises(ug.GradcheckError) as err:
        ug.gradcheck(fn, [cell.weight_hh])
    assert str(err.value).count("truncate=3 of 5 steps") == 1


def test_truncate_at_least_the_steps_is_full_bptt_and_passes():
    cell, net, xs = _setup(5)
    assert ug.gradcheck(lambda w: ug.mean(net(xs)[0] ** 2), [cell.weight_hh])


def test_a_failure_without_a_truncated_net_says_nothing_of_truncation():
    cell, net, xs = _setup(None)
    with pytest.raises(ug.GradcheckError) as err:
        ug.gradcheck(lambda w: ug.mean(net(xs)[0] ** 2) * w.detach().sum(), [cell.weight_hh])
    assert "trunc" not in str(err.value)
