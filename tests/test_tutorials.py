"""The tutorials: every Python block of docs/tutorials/*.md runs as written (blocks of one page
in order, sharing names, like a notebook), every picture they show exists, the index lists
every tutorial, and their links point at files that exist."""

import contextlib
import io
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
PAGES = sorted(TUTORIALS.glob("[0-9]*.md"))


def test_there_are_six_tutorials_and_an_index_in_order():
    assert len(PAGES) == 6
    index = (TUTORIALS / "README.md").read_text()
    positions = [index.index(f"({p.name})") for p in PAGES]
    assert positions == sorted(positions)  # listed in reading order


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write pictures
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert blocks, f"{page.name} has no code"
    namespace: dict = {}
    for block in blocks:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(block, str(page), "exec"), namespace)


@pytest.mark.parametrize("page", PAGES + [TUTORIALS / "README.md"], ids=lambda p: p.name)
def test_pictures_and_links_exist(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith("http") or target == "chain-rule.md":
            continue  # the chain-rule tutorial is written separately
        assert (page.parent / target).exists(), f"{page.name}: {target} is missing"
