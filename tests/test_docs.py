"""The Python examples in README.md and docs/*.md run as written."""

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
PAGES_WITH_CODE = [p for p in PAGES if "```python" in p.read_text()]


# Warnings a block is expected to raise, by a call it makes: the page says so in its text, and
# the block must raise it (every other warning still reaches the suite). PyTorch 2.13
# deprecates torch.jit.script (docs/export.md says so, and what replaces it).
EXPECTED_WARNINGS = {
    "torch.jit.script(": (DeprecationWarning, r"`torch\.jit\.script` is deprecated",
                          "marks `torch.jit.trace` and `torch.jit.script` as deprecated"),
}


def _expecting(block: str, page: Path):
    """``pytest.warns`` for each warning ``block`` is expected to raise (which re-emits every
    other warning it sees), else a context that does nothing."""
    stack = contextlib.ExitStack()
    for call, (category, message, said) in EXPECTED_WARNINGS.items():
        if call in block:
            text = " ".join(page.read_text().split())
            assert said in text, f"{page.name} does not say that {call} warns"
            stack.enter_context(pytest.warns(category, match=message))
    return stack


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (diagrams)
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    namespace: dict = {}
    for block in blocks:  # blocks of one page run in order, sharing names, like a notebook
        with contextlib.redirect_stdout(io.StringIO()), _expecting(block, page):
            exec(compile(block, str(page), "exec"), namespace)


def test_every_page_with_code_is_checked():
    assert {p.name for p in PAGES_WITH_CODE} >= {"README.md", "engine.md", "training.md"}
