"""Messages a PyTorch user meets on the common mistakes name what they did and the fix."""

import subprocess
import sys

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.optim import TrainingError


def test_an_optimizer_given_the_names_of_the_parameters_says_parameters_is_a_dict():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    with pytest.raises(TrainingError, match=r"dict name -> Tensor.*\.values\(\)"):
        ug.optim.SGD(list(cell.parameters()), lr=0.1)


def test_del_after_an_in_place_step_is_refused_as_before_it():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    p = cell.weight_hh
    with ug.no_grad():
        cell.weight_hh -= 0.0 * np.ones(p.shape)
    assert "weight_hh" not in cell.__dict__ and cell.weight_hh is p
    with pytest.raises(ug.CellError, match="weight_hh"):
        del cell.weight_hh
    assert cell.weight_hh is p


@pytest.mark.parametrize("builtin", [max, min])
def test_python_max_min_on_placeholders_names_them_and_ug_maximum(builtin):
    cell = ug.Cell("m")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    with pytest.raises(ug.CellError, match=r"max\(\).*ug\.maximum"):
        builtin(ug.tanh(x + h), h)


def test_a_detached_placeholder_names_detach_in_its_message():
    cell = ug.Cell("d")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.eye(2))
    hn = ug.tanh(x @ W.T + h.detach() @ W.T)
    cell.feedback(h, hn)
    cell.output("y", hn)
    with pytest.raises(ug.CellError, match=r"h\.detach\(\)"):
        ug.unroll(cell, steps=2)


def test_a_name_used_twice_reads_an_output_or_an_input():
    cell = ug.Cell("n")
    x = cell.input("x", (2,))
    cell.output("y", x * 2.0)
    with pytest.raises(ug.CellError, match="already used by an output"):
        cell.input("y", (2,))
    with pytest.raises(ug.CellError, match="already used by an input"):
        cell.state("x", (2,))


def test_python_dash_m_unrollgraph_runs_the_command_line_tool():
    done = subprocess.run([sys.executable, "-m", "unrollgraph", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()


@pytest.mark.parametrize("build", [
    lambda hn: ug.concat([hn[:, :2], ug.tensor(np.zeros((1, 2)))], axis=-1),
    lambda hn: ug.concat([ug.tensor(np.ones((1, 1))), hn], axis=1),
])
def test_a_constant_with_a_batch_of_one_is_named_not_the_axis(build):
    cell = ug.Cell("pad")
    x = cell.input("x", (4,))
    h = cell.state("h", (4,))
    hn = ug.tanh(x + h)
    cell.feedback(h, hn)
    cell.output("y", build(hn))
    with pytest.raises(ug.CellError, match=r"a constant of shape \(1, \d\).*batch of one"):
        ug.unroll(cell, steps=2)


def test_a_nets_parameters_are_its_cells_the_same_tensors():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=3)
    got = net.parameters()
    assert got.keys() == cell.parameters().keys()
    assert all(got[k] is p for k, p in cell.parameters().items())
