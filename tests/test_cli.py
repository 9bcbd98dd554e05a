"""The unrollgraph command line: render ready cells and a user's cell to files."""

import subprocess
import sys

import pytest

from unrollgraph.cli import main


def test_render_rnn_dot_has_one_cluster_per_step(tmp_path, capsys):
    out = tmp_path / "rnn.dot"
    assert main(["render", "rnn", "--steps", "3", "--hidden", "2", "--grad", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.count("subgraph cluster_step") == 3
    assert "∇ total" in text and '"loss" [' in text
    assert f"wrote {out}" in capsys.readouterr().out


def test_render_folded_dot_has_delay_edge(tmp_path):
    out = tmp_path / "lstm.dot"
    assert main(["render", "lstm", "--folded", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count("z⁻¹ (one-step delay)") == 2


@pytest.mark.dot
@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"),
                                        ("pdf", b"%PDF")])
def test_render_image_formats(tmp_path, fmt, magic):
    out = tmp_path / f"gru.{fmt}"
    assert main(["render", "gru", "--steps", "2", "--grad", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


@pytest.mark.dot
def test_render_a_users_cell_from_a_script(tmp_path):
    script = tmp_path / "mycell.py"
    script.write_text(
        "import numpy as np, unrollgraph as ug\n"
        "def make():\n"
        "    cell = ug.Cell('leaky')\n"
        "    x = cell.input('x', (2,))\n"
        "    h = cell.state('h', (2,))\n"
        "    W = cell.param('W', np.eye(2) * 0.5)\n"
        "    h_next = 0.5 * h + ug.tanh(x @ W)\n"
        "    cell.feedback(h, h_next)\n"
        "    cell.output('y', h_next)\n"
        "    return cell\n"
        "cell = make()\n"
    )
    for var in ("make", "cell"):
        out = tmp_path / f"{var}.svg"
        assert main(["render", f"{script}:{var}", "--steps", "3", "--grad", "-o",
                     str(out)]) == 0
        svg = out.read_text(encoding="utf-8")
        assert svg.count('class="cluster"') == 3 and "leaky" in svg


def test_errors_exit_2_with_a_hint(tmp_path, capsys):
    assert main(["render", "transformer", "-o", str(tmp_path / "a.svg")]) == 2
    assert "use rnn, lstm, gru, or path/to/script.py:name" in capsys.readouterr().err
    assert main(["render", "rnn", "-o", str(tmp_path / "a.jpg")]) == 2
    assert "end the file name with one of .svg" in capsys.readouterr().err
    script = tmp_path / "empty.py"
    script.write_text("x = 1\n")
    assert main(["render", f"{script}:cell", "-o", str(tmp_path / "a.dot")]) == 2
    assert "defines no 'cell'" in capsys.readouterr().err
    assert main(["render", f"{script}:x", "-o", str(tmp_path / "a.dot")]) == 2
    assert "not a ug.Cell" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(tmp_path):
    out = tmp_path / "m.dot"
    done = subprocess.run([sys.executable, "-m", "unrollgraph.cli", "render", "rnn", "--steps",
                           "2", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").count("subgraph cluster_step") == 2
