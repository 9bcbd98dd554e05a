"""The README's demonstration (``./dev demo`` runs examples/demo.py) runs and passes its checks."""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.dot
def test_the_readme_demo_draws_and_passes_its_gradient_checks(tmp_path, capsys):
    demo = runpy.run_path(str(ROOT / "examples" / "demo.py"), run_name="demo")
    assert demo["main"](str(tmp_path)) == 0
    printed = capsys.readouterr().out
    assert "checked: the unrolled gradients agree" in printed
    assert "MISMATCH" not in printed
    assert (tmp_path / "rnn_folded.svg").stat().st_size > 0
    assert (tmp_path / "rnn_unrolled.svg").stat().st_size > 0
