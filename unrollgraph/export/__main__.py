"""``python -m unrollgraph.export``: print the table of which op lowers to which target;
``python -m unrollgraph.export --write docs/export.md`` puts it in that page, between its
``<!-- lowering-table -->`` and ``<!-- /lowering-table -->`` markers."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import lowering_table

BEGIN, END = "<!-- lowering-table -->", "<!-- /lowering-table -->"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unrollgraph.export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PAGE",
                        help="replace the table between the markers in this Markdown page")
    args = parser.parse_args(argv)
    table = lowering_table()
    if args.write is None:
        print(table)
        return 0
    page = Path(args.write)
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r"\n(?:.*?\n)?" + re.escape(END), re.S)
    if not pattern.search(text):
        print(f"error: {page} has no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    page.write_text(pattern.sub(lambda m: f"{BEGIN}\n{table}\n{END}", text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
