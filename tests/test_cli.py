"""The unrollgraph command line: render ready cells and a user's cell to files."""

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# -- every user mistake: exit status 2, one line on stderr, no traceback ----------------------

_SCRIPTS = {
    "takes_args.py": "import unrollgraph as ug\ndef make(n):\n    return ug.Cell('c')\n",
    "invalid_cell.py": (
        "import unrollgraph as ug\n"
        "cell = ug.Cell('bad')\n"
        "x = cell.input('x', (2,))\n"
        "h = cell.state('h', (2,))\n"
        "cell.output('y', ug.tanh(x + h))\n"  # the state has no feedback edge
    ),
    "raises.py": "x = 1\nraise RuntimeError('broken\\nscript')\n",
    "maker_raises.py": "def make():\n    return {}['missing']\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "syntax.py": "def f(:\n",
    "returns_int.py": "def make():\n    return 3\n",
}

_BAD = [
    # the exact command lines that ended in a traceback (or drew L = nan)
    (["rnn", "--truncate", "0"], "--truncate: must be at least 1, got 0"),
    (["rnn", "--batch", "-1"], "--batch: must be at least 1, got -1"),
    (["rnn", "--seed", "-1"], "--seed: must be at least 0, got -1"),
    (["rnn", "--batch", "0", "--grad"], "--batch: must be at least 1, got 0"),
    (["{dir}/takes_args.py:make"], "takes arguments (n)"),
    (["{dir}/invalid_cell.py:cell"], "state 'h' has no feedback edge"),
    (["rnn", "--hidden", "1000000"], "would need about 7.3 TB"),
    (["rnn", "--steps", "1000000000000"], "would need about"),
    (["rnn", "--steps", "100000", "--batch", "100000", "--grad"], "would need about"),
    # more of the kind
    (["rnn", "--steps", "0"], "--steps: must be at least 1"),
    (["rnn", "--steps", "2.5"], "--steps: must be an integer, got '2.5'"),
    (["rnn", "--hidden", "x"], "--hidden: must be an integer"),
    (["rnn", "--input", "0"], "--input: must be at least 1"),
    (["rnn", "--detail", "all"], "invalid choice: 'all'"),
    (["transformer"], "unknown cell 'transformer'"),
    (["{dir}/raises.py:cell"], "running {dir}/raises.py failed (line 2): RuntimeError: broken "
                               "script"),
    (["{dir}/maker_raises.py:make"], "calling {dir}/maker_raises.py:make() failed (line 2): "
                                     "KeyError"),
    (["{dir}/exits.py:cell"], "exited (SystemExit: 3)"),
    (["{dir}/syntax.py:cell"], "line 1: SyntaxError"),
    (["{dir}/returns_int.py:make"], "is a int, not a ug.Cell"),
    (["{dir}/missing.py:cell"], "no such script"),
    (["{dir}/takes_args.py:cell"], "defines no 'cell'"),
    (["{dir}/takes_args.py:make", "--hidden", "4"], "--hidden sets the size of a ready cell"),
    (["rnn", "--contributions"], "--contributions lists the parts of a gradient"),
    (["rnn", "--grad", "--folded", "--contributions"], "needs --grad and cannot be used"),
]


def _scripts(tmp_path):
    for name, text in _SCRIPTS.items():
        (tmp_path / name).write_text(text)


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("unrollgraph: error: ")
    return lines[0]


@pytest.mark.parametrize("args, words", _BAD)
def test_each_mistake_exits_2_with_one_line(tmp_path, capsys, args, words):
    _scripts(tmp_path)
    argv = ["render"] + [a.format(dir=tmp_path) for a in args] + ["-o", str(tmp_path / "a.dot")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert words.format(dir=tmp_path) in _one_error_line(captured.err)
    assert captured.out == ""
    assert not (tmp_path / "a.dot").exists()


def test_output_path_mistakes(tmp_path, capsys):
    folder = tmp_path / "out.svg"
    folder.mkdir()
    assert main(["render", "rnn", "-o", str(folder)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["render", "rnn", "-o", str(blocker / "a.dot")]) == 2
    assert "cannot create the folder" in _one_error_line(capsys.readouterr().err)
    assert main(["render", "rnn"]) == 2  # no -o at all
    assert "required: -o/--output" in _one_error_line(capsys.readouterr().err)


def test_missing_output_folders_are_created(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "rnn.dot"
    assert main(["render", "rnn", "--steps", "2", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count("subgraph cluster_step") == 2
    assert capsys.readouterr().err == ""


@given(option=st.sampled_from(["--steps", "--hidden", "--input", "--batch", "--truncate",
                               "--seed"]),
       value=st.integers(max_value=-1) | st.integers(min_value=-1, max_value=0))
def test_out_of_range_integers_for_every_numeric_option(tmp_path_factory, option, value):
    if option == "--seed" and value == 0:
        value = -1  # 0 is a valid seed
    out = tmp_path_factory.mktemp("o") / "a.dot"
    err = _run_in_process(["render", "rnn", "--grad", f"{option}={value}", "-o", str(out)])
    assert f"argument {option}: must be at least" in err
    assert not out.exists()


@given(option=st.sampled_from(["--steps", "--hidden", "--input", "--batch", "--truncate",
                               "--seed"]),
       text=st.text(min_size=0, max_size=8).filter(lambda t: not _is_int(t)))
def test_non_integers_for_every_numeric_option(tmp_path_factory, option, text):
    out = tmp_path_factory.mktemp("o") / "a.dot"
    err = _run_in_process(["render", "rnn", f"{option}={text}", "-o", str(out)])
    assert f"argument {option}: must be an integer" in err


@given(option=st.sampled_from(["--hidden", "--input", "--steps"]),
       value=st.integers(min_value=10**9, max_value=10**40))
def test_sizes_too_large_to_allocate_are_refused_before_allocating(tmp_path_factory, option,
                                                                   value):
    out = tmp_path_factory.mktemp("o") / "a.dot"
    err = _run_in_process(["render", "lstm", "--grad", f"{option}={value}", "-o", str(out)])
    assert "would need about" in err and "use smaller" in err


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _run_in_process(argv) -> str:
    import contextlib
    import io

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main(argv)
    assert status == 2, (argv, err.getvalue())
    assert out.getvalue() == ""
    return _one_error_line(err.getvalue())


def test_help_says_that_a_script_is_run(capsys):
    assert main(["render", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "script.py:name RUNS script.py" in text
    assert "Only render scripts you trust" in text


def test_a_cell_without_inputs_or_outputs_renders_with_gradients(tmp_path, capsys):
    script = tmp_path / "auto.py"
    script.write_text(
        "import numpy as np, unrollgraph as ug\n"
        "def make():\n"
        "    c = ug.Cell('auto')\n"
        "    h = c.state('h', (2,), init=[1.0, 0.5])\n"
        "    W = c.param('W', np.eye(2) * 0.5)\n"
        "    c.feedback(h, ug.tanh(h @ W))\n"
        "    return c\n"
    )
    out = tmp_path / "auto.dot"
    assert main(["render", f"{script}:make", "--grad", "--batch", "3", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert '"loss" [' in text and "∇" in text


def test_an_internal_failure_is_one_line_with_status_1(tmp_path, capsys, monkeypatch):
    import unrollgraph as ug

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(ug, "to_dot", broken)
    assert main(["render", "rnn", "-o", str(tmp_path / "a.dot")]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("unrollgraph: internal error: IndexError") and "\n" not in line
    monkeypatch.setenv("UNROLLGRAPH_TRACEBACK", "1")
    with pytest.raises(IndexError):
        main(["render", "rnn", "-o", str(tmp_path / "a.dot")])


def test_python_dash_m_runs_the_cli(tmp_path):
    out = tmp_path / "m.dot"
    done = subprocess.run([sys.executable, "-m", "unrollgraph.cli", "render", "rnn", "--steps",
                           "2", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").count("subgraph cluster_step") == 2
    # a mistake, seen from outside: status 2, one line, no traceback
    done = subprocess.run([sys.executable, "-m", "unrollgraph.cli", "render", "rnn",
                           "--truncate", "0", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "unrollgraph: error: argument --truncate: must be at least 1, got 0 (see "
        "'unrollgraph render --help')"
    ]


@pytest.mark.dot
def test_the_examples_in_docs_cli_md_run(tmp_path, monkeypatch, capsys):
    import pathlib
    import re
    import shlex

    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    block = re.search(r"```sh\n(.*?)```", page.read_text(encoding="utf-8"), re.S).group(1)
    lines = [line.split("#")[0].split() for line in block.splitlines() if line.strip()]
    assert len(lines) == 3
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "path" / "to" / "mycell.py"
    script.parent.mkdir(parents=True)
    script.write_text("import unrollgraph as ug\ndef make():\n    return ug.nn.GRUCell(2, 3)\n")
    for words in lines:
        assert words[0] == "unrollgraph"
        assert main(shlex.split(" ".join(words[1:]))) == 0
        out = words[words.index("-o") + 1]
        assert (tmp_path / out).stat().st_size > 0


def test_the_option_words_never_rewrite_the_users_names(tmp_path, capsys):
    """The command line puts a library message's option hints in its own words
    (``max_nodes=6`` -> ``--max-nodes 6``); a name of the user's cell that reads like such a
    hint is printed as written."""
    script = tmp_path / "named.py"
    script.write_text(
        "import numpy as np, unrollgraph as ug\n"
        "cell = ug.Cell(\"max_nodes=9 detail='ops'\")\n"
        "x = cell.input('x', (2,))\n"
        "h = cell.state('h', (2,))\n"
        "cell.output('y', 0.5 * h + ug.tanh(x, name='raise max_nodes'))\n"
    )
    assert main(["render", f"{script}:cell", "-o", str(tmp_path / "a.dot")]) == 2
    err = capsys.readouterr().err
    assert "cell \"max_nodes=9 detail='ops'\": state 'h' has no feedback" in err
    assert "--max-nodes" not in err and "--detail" not in err
