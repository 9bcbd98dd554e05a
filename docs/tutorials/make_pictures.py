"""Redraw the pictures of the tutorials (docs/tutorials/img) from the code that makes them.

    python docs/tutorials/make_pictures.py

Most pictures are the demonstrations' (``unrollgraph demo NAME``, with their default options);
the two of tutorial 3 are drawn by that page's own code blocks, so the page, its code and its
pictures show the same run. Each demonstration's printout is shown as it runs.
"""

import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMG = HERE / "img"

# demonstration -> the pictures of it the tutorials show
FROM_DEMOS = {
    "bptt-steps": ["contributions.png", "unrolled.png"],
    "vanishing": ["vanishing.png"],
    "exploding": ["exploding_flow.png", "exploding_training.png"],
    "remedies": ["remedies.png"],
    "memory": ["memory.png"],
}
# tutorial page -> {file its code writes: picture it shows}
FROM_PAGES = {
    "03-truncated-bptt.md": {"truncation.png": "truncation_in_graph.png",
                             "tbptt.png": "truncation_streaming.png"},
}


def run_page(page: Path, folder: Path) -> None:
    """Run a page's Python blocks in order, in ``folder``, as the test suite does."""
    import os

    here = os.getcwd()
    os.chdir(folder)
    try:
        namespace: dict = {}
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            exec(compile(block, str(page), "exec"), namespace)
    finally:
        os.chdir(here)


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    from unrollgraph.demos import run_demo

    IMG.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, pictures in FROM_DEMOS.items():
            folder = Path(tmp) / name
            run_demo(name, folder)
            for p in pictures:
                shutil.copy(folder / p, IMG / p)
        for page, pictures in FROM_PAGES.items():
            folder = Path(tmp) / page
            folder.mkdir()
            print(f"{page}:")
            run_page(HERE / page, folder)
            for written, shown in pictures.items():
                shutil.copy(folder / written, IMG / shown)
    print(f"pictures written to {IMG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
