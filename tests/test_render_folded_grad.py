"""A folded cell drawn after a run: its parameters print ``.grad``, which adds up over every
step and every ``backward()`` call, and the picture says so, and says whose colour scale fills
them; drawn with a run's diagram (``color_scale=``) or beside it (``render_side_by_side``), it
shares that scale, so one gradient gets one colour in both."""

import html
import re

import numpy as np

import unrollgraph as ug
from unrollgraph.render import _THEMES, _Scale

_FLOAT = re.compile(r"[-−+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)")


def _run(calls=1, T=3):
    cell = ug.nn.RNNCell(2, 2, seed=0)
    net = ug.unroll(cell, steps=T)
    xs = np.random.default_rng(0).standard_normal((T, 1, 2))
    for _ in range(calls):
        out, _ = net(xs)
        loss = ug.mse_loss(out, np.zeros(out.shape))
        loss.backward()
    return cell, net, loss


def _param_lines(text, cell, prefix=""):
    """parameter name -> its node's line, for the folded cell's cylinders."""
    found = {}
    for line in text.splitlines():
        m = re.match(rf'\s*"{prefix}n\d+" \[.*shape="cylinder".*<b>([^<]+)</b>', line)
        if m and m.group(1) in cell.parameters():
            found[m.group(1)] = line
    assert set(found) == set(cell.parameters()), found
    return found


def _legend(text, name="legend"):
    return next(line for line in text.splitlines() if line.lstrip().startswith(f'"{name}" ['))


def _colour(scale_range, g):
    return _Scale([], _THEMES["light"]["ramp"], scale_range).colour(float(np.linalg.norm(g)))


def test_the_folded_cell_says_it_prints_grad_summed_over_every_backward_call():
    """Two backward() calls: .grad holds twice the run's gradient. The cell printed it as
    ∇, the sign the unrolled view prints the run's gradient with, with no word saying so."""
    cell, net, loss = _run(calls=2)
    text = ug.to_dot(cell)
    for name, line in _param_lines(text, cell).items():
        m = re.search(r"\.grad = ([^<]*)<", line)
        assert m, line
        got = [float(x.replace("−", "-")) for x in _FLOAT.findall(html.unescape(m.group(1)))]
        assert np.allclose(got, cell.parameters()[name].grad.reshape(-1), rtol=6e-3)
        assert "∇ = " not in line
    legend = _legend(text)
    assert ">.grad<" in legend
    assert "every step and" in legend and "every backward() call since zero_grad()" in legend
    # its scale is its own, and the legend says so (and how to share another's)
    assert "‖.grad‖ (log scale) on this picture's own" in legend
    assert "color_scale=that diagram shares it" in legend


def test_a_folded_cell_drawn_with_a_runs_diagram_shares_its_scale():
    cell, net, loss = _run()
    unrolled = ug.render(net, loss=loss)
    text = ug.render(cell, color_scale=unrolled).source
    run_range = unrolled.color_scale
    for name, line in _param_lines(text, cell).items():
        # one backward() call: .grad is the run's gradient, one colour in both pictures
        grad = cell.parameters()[name].grad
        assert np.array_equal(grad, net.last_run.grad(name))
        want = _colour(run_range, grad)
        assert f'fillcolor="{want}"' in line, (name, want)
        node = net.param_nodes[name]
        their = next(li for li in unrolled.source.splitlines()
                     if li.lstrip().startswith(f'"{net.graph.id(node)}" ['))
        assert f'fillcolor="{want}"' in their, name
    assert "on the scale of the diagram given (color_scale=)" in _legend(text)
    given = ug.to_dot(cell, color_scale=(1e-3, 10.0))
    assert "on the scale given (color_scale=)" in _legend(given)


def test_beside_a_run_in_a_figure_the_folded_cell_says_it_is_on_the_figures_scale():
    cell, net, loss = _run(calls=2)
    fig = ug.render_side_by_side(cell, net, labels=("cell", "net"), loss=(None, loss))
    text = fig.source
    assert "on the figure's one scale" in _legend(text, "s0_legend")
    for name, line in _param_lines(text, cell, prefix="s0_").items():
        want = _colour(fig.color_scale, cell.parameters()[name].grad)
        assert f'fillcolor="{want}"' in line, (name, want)


def test_a_cell_never_run_has_no_grad_row():
    text = ug.to_dot(ug.nn.RNNCell(2, 2, seed=0))
    assert ".grad" not in text and "gradient norm" not in text
