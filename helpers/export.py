"""Export a notebook's ``# @save`` cells to a module of ``helpers``.

A notebook keeps what is new in its paper visible in its own cells. When a
later notebook needs one of them, the cell starts with ``# @save`` and this
exporter writes all such cells of ``book/<name>.ipynb``, in order, to
``helpers/<name>.py``. The module is generated: edit the notebook, then run

    python -m helpers.export            # every notebook of book/
    python -m helpers.export --check    # fail if a module is out of date (tests do)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

MARKER = "# @save"
ROOT = Path(__file__).resolve().parent.parent


def saved_source(notebook: Path) -> str | None:
    """The module text made of ``notebook``'s ``# @save`` cells, or None if it has none."""
    nb = nbformat.read(notebook, as_version=4)
    blocks = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        if lines and lines[0].strip() == MARKER:
            blocks.append("\n".join(lines[1:]).strip("\n"))
    if not blocks:
        return None
    return "\n\n\n".join(blocks) + "\n"


def exports(root: Path = ROOT) -> dict[Path, str]:
    """``{module path: text}`` for every notebook of ``book/`` with saved cells."""
    result = {}
    for notebook in sorted((root / "book").glob("*.ipynb")):
        text = saved_source(notebook)
        if text is not None:
            result[root / "helpers" / f"{notebook.stem}.py"] = text
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale modules")
    args = parser.parse_args(argv)
    stale = []
    for path, text in exports().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"out of date: {names}; run python -m helpers.export", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
