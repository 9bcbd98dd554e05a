"""Command line: the textbook view, the print theme, -f formats, and help for each."""

import pytest

from unrollgraph.cli import build_parser, main


def test_textbook_detail_and_print_theme_on_the_command_line(tmp_path):
    out = tmp_path / "rnn.dot"
    assert main(["render", "rnn", "--steps", "4", "--grad", "--detail", "textbook",
                 "--theme", "print", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "<i>weight_hh</i>" in text and "cylinder" not in text
    assert "#1d4ed8" not in text  # print: no decorative colour
    out2 = tmp_path / "beside.dot"
    assert main(["render", "lstm", "--detail", "textbook", "--beside", "-o", str(out2)]) == 0
    assert "fold_delay" in out2.read_text(encoding="utf-8")
    out3 = tmp_path / "folded.dot"
    assert main(["render", "gru", "--folded", "--detail", "textbook", "-o", str(out3)]) == 0
    assert 'shape="square"' in out3.read_text(encoding="utf-8")


@pytest.mark.dot
@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"),
                                        ("pdf", b"%PDF")])
def test_format_option_names_the_format(tmp_path, fmt, magic):
    out = tmp_path / "pic"
    assert main(["render", "rnn", "--steps", "2", "--detail", "textbook", "-f", fmt,
                 "-o", str(out)]) == 0
    assert (tmp_path / f"pic.{fmt}").read_bytes().startswith(magic)


def test_format_and_suffix_that_disagree_and_misplaced_beside_are_errors(tmp_path, capsys):
    assert main(["render", "rnn", "-f", "pdf", "-o", str(tmp_path / "a.svg")]) == 2
    assert "-f pdf but -o" in capsys.readouterr().err
    assert main(["render", "rnn", "--beside", "-o", str(tmp_path / "a.dot")]) == 2
    assert "--beside" in capsys.readouterr().err


def test_detail_and_theme_have_help_text():
    r = build_parser()._subparsers._group_actions[0].choices["render"]
    helps = {a.dest: a.help for a in r._actions}
    assert "textbook" in helps["detail"] and "print" in helps["theme"]
    assert helps["format"]
