"""The papers' modules are generated from the notebooks (helpers.book.export), honestly."""

import ast
import shutil

import nbformat
import pytest

from helpers.book import export

from conftest import ROOT

pytestmark = pytest.mark.keras_free  # see conftest.py

PAPERS = ("vit", "spt_lsa", "perceiver", "cct", "shiftvit")


def test_every_papers_module_is_the_export_of_its_notebook():
    assert export.stale_modules(ROOT) == [], "run python -m helpers.book.export"
    assert export.main(["--check"]) == 0


@pytest.mark.parametrize("name", PAPERS)
def test_a_generated_module_names_its_notebook_and_each_cell(name):
    text = (ROOT / "helpers" / "papers" / f"{name}.py").read_text()
    assert text.startswith(f"# Generated from book/{name}.ipynb by `python -m helpers.book.export`")
    nb = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    saved = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and c.source.startswith(export.MARKER)]
    # the first saved cell is the module's docstring and imports; every later one is named
    for index in saved[1:]:
        assert f"# book/{name}.ipynb, cell {index} " in text
        assert nb.cells[index].source.splitlines()[1] in text


@pytest.mark.parametrize("name", PAPERS)
def test_defaults_are_the_values_of_the_parameters_cell(name):
    module = ast.parse((ROOT / "helpers" / "papers" / f"{name}.py").read_text())
    assigned = {node.targets[0].id: node.value for node in module.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    nb = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    written = {node.target.id: ast.literal_eval(node.value)
               for node in ast.parse(cell.source).body if isinstance(node, ast.AnnAssign)}
    assert ast.literal_eval(assigned["DEFAULTS"]) == written


@pytest.mark.parametrize("name", PAPERS)
def test_no_notebook_imports_its_own_generated_module(name):
    assert export.own_imports(ROOT / "book" / f"{name}.ipynb") == []


def test_the_export_refuses_a_notebook_that_imports_its_own_module(tmp_path):
    shutil.copytree(ROOT / "book", tmp_path / "book")
    path = tmp_path / "book" / "vit.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("from helpers.papers.vit import Patches"))
    nbformat.write(nb, path)
    with pytest.raises(export.ExportError, match=r"book/vit.ipynb imports its own "
                                                 r"helpers.papers.vit in cell\(s\) \d+"):
        export.exports(tmp_path)


def test_a_notebook_edited_after_its_export_is_reported_stale(tmp_path):
    shutil.copytree(ROOT / "book", tmp_path / "book")
    shutil.copytree(ROOT / "helpers" / "papers", tmp_path / "helpers" / "papers")
    path = tmp_path / "book" / "vit.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith("# @save\nclass Patches"))
    cell.source = cell.source.replace("Cut images", "Split images")
    nbformat.write(nb, path)
    assert export.stale_modules(tmp_path) == [tmp_path / "helpers" / "papers" / "vit.py"]
