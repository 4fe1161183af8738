"""Generate ``helpers/papers/<name>.py`` from the ``# @save`` cells of ``book/<name>.ipynb``.

A notebook keeps what is new in its paper visible in its own cells. The cells
that later notebooks, the benchmark and the tests need start with ``# @save``;
this exporter writes them, in order, to the paper's module, each under a
comment naming the notebook, the cell and the section it came from, and ends
the module with ``DEFAULTS``: the values of the notebook's parameters cell
(the full-size recipe), so that nothing outside the notebook restates them.

    python -m helpers.book.export            # every notebook of book/
    python -m helpers.book.export --check    # fail if a module is out of date (tests do)

Two rules keep the export honest, and ``--check`` (and the book's runner,
before it executes anything) enforces both:

* every generated module is up to date with its notebook;
* no notebook imports its own generated module: a cell that did would test or
  use the last exported copy instead of the code the notebook just defined.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat

MARKER = "# @save"
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "helpers.papers"


class ExportError(RuntimeError):
    """A notebook breaks a rule of the export."""


def _heading(markdown: str) -> str | None:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.M)
    return headings[-1] if headings else None


def parameter_defaults(nb) -> dict:
    """The literal values of the notebook's cell tagged ``parameters``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return {
                node.target.id: ast.literal_eval(node.value)
                for node in tree.body
                if isinstance(node, ast.AnnAssign) and node.value is not None
            }
    return {}


def own_imports(notebook: Path, nb=None) -> list[int]:
    """Indexes of the code cells of ``notebook`` that import its own generated module."""
    nb = nb or nbformat.read(notebook, as_version=4)
    own = f"{PACKAGE}.{notebook.stem}"
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if own in modules:
                found.append(index)
                break
    return found


def saved_source(notebook: Path, root: Path = ROOT) -> str | None:
    """The module text made of ``notebook``'s ``# @save`` cells, or None if it has none."""
    nb = nbformat.read(notebook, as_version=4)
    relative = notebook.resolve().relative_to(root.resolve()).as_posix()
    blocks, section = [], None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            section = _heading(cell.source) or section
            continue
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        if lines and lines[0].strip() == MARKER:
            where = f"# {relative}, cell {index}" + (f' ("{section}")' if section else "")
            body = "\n".join(lines[1:]).strip("\n")
            blocks.append(body if not blocks else f"{where}\n{body}")
    if not blocks:
        return None
    header = (
        f"# Generated from {relative} by `python -m helpers.book.export`: edit the\n"
        "# notebook's `# @save` cells, not this file. Each block names the cell it came from.\n"
    )
    defaults = "".join(f"    {name!r}: {value!r},\n"
                       for name, value in parameter_defaults(nb).items())
    footer = (
        f"# The values of the parameters cell of {relative}: the full-size recipe.\n"
        f"DEFAULTS = {{\n{defaults}}}"
    )
    return header + "\n\n\n".join(blocks + [footer]) + "\n"


def exports(root: Path = ROOT) -> dict[Path, str]:
    """``{module path: text}`` for every notebook of ``book/`` with saved cells."""
    result = {}
    for notebook in sorted((root / "book").glob("*.ipynb")):
        cells = own_imports(notebook)
        if cells:
            raise ExportError(
                f"{notebook.relative_to(root)} imports its own {PACKAGE}.{notebook.stem} in "
                f"cell(s) {', '.join(map(str, cells))}: use the names the notebook defines"
            )
        text = saved_source(notebook, root)
        if text is not None:
            result[root / "helpers" / "papers" / f"{notebook.stem}.py"] = text
    return result


def stale_modules(root: Path = ROOT) -> list[Path]:
    """Generated modules that differ from what their notebooks would generate now."""
    return [path for path, text in exports(root).items()
            if not path.exists() or path.read_text() != text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale modules")
    args = parser.parse_args(argv)
    try:
        generated = exports()
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    stale = []
    for path, text in generated.items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"out of date: {names}; run python -m helpers.book.export", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
