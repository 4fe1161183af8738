"""Published runs: code digests, staleness and the pages that show them (helpers.book.publish)."""

import json
import shutil

import nbformat
import pytest

from helpers.book import publish
from helpers.book.runner import model_notebooks

from conftest import ROOT

pytestmark = pytest.mark.keras_free  # see conftest.py

PUBLISHED = "cifar10-cpu"
# Test top-1 a published cifar10-cpu run must reach (chance is 10%): 60% for the
# shortened recipes, 75% for the CCT, which runs its source's full 30 epochs.
PUBLISHED_FLOORS = {"cct": 0.75}


@pytest.fixture
def tree(tmp_path):
    """A copy of the sources a digest reads: book/ notebooks and helpers/."""
    shutil.copytree(ROOT / "helpers", tmp_path / "helpers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "book").mkdir()
    for notebook in (ROOT / "book").glob("*.ipynb"):
        shutil.copy2(notebook, tmp_path / "book" / notebook.name)
    return tmp_path


def edit_cell(path, old, new):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and old in c.source)
    cell.source = cell.source.replace(old, new)
    nbformat.write(nb, path)


def test_the_helpers_a_notebook_imports_are_found_through_other_helpers():
    files = publish.helper_files("from helpers.harness import start\nimport numpy as np")
    assert "helpers/__init__.py" in files and "helpers/harness/__init__.py" in files
    assert "helpers/harness/run.py" in files  # start lives there: found through __init__
    assert "helpers/harness/train.py" in files and "helpers/harness/resume.py" in files
    assert not any(f.startswith("helpers/book/") for f in files)  # not imported by start
    assert publish.helper_files("import numpy") == []

    spt = publish.code_digest(ROOT / "book/spt_lsa.ipynb")
    assert "helpers/papers/vit.py" in spt["modules"]  # the ViT notebook's exported code
    assert "helpers/papers/spt_lsa.py" not in spt["modules"]  # its own export is not imported
    vit = publish.code_digest(ROOT / "book/vit.ipynb")
    assert "helpers/papers/spt_lsa.py" not in vit["modules"]


def test_a_papermill_injected_cell_is_not_part_of_the_code(tree):
    path = tree / "book/vit.ipynb"
    before = publish.code_digest(path, tree)
    nb = nbformat.read(path, as_version=4)
    injected = nbformat.v4.new_code_cell('epochs = 3\ndataset = "digits"')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(5, injected)
    nbformat.write(nb, path)
    assert publish.changes(before, publish.code_digest(path, tree)) == []


def test_changes_name_the_edited_cells_and_helpers(tree):
    path = tree / "book/vit.ipynb"
    recorded = publish.code_digest(path, tree)
    assert publish.changes(recorded, recorded) == []

    edit_cell(path, "plot_learning_curves(result.history", "plot_learning_curves(result.history ")
    assert publish.changes(recorded, publish.code_digest(path, tree)) == [
        "1 code cell of the notebook changed"]

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print('one more')"))
    nbformat.write(nb, path)
    train = tree / "helpers/harness/train.py"
    train.write_text(train.read_text() + "\n# edited\n")
    assert publish.changes(recorded, publish.code_digest(path, tree)) == [
        "1 code cell of the notebook changed", "1 code cell of the notebook added",
        "helpers/harness/train.py changed"]

    # a markdown edit changes no output
    recorded = publish.code_digest(path, tree)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source += "\n\nOne more sentence."
    nbformat.write(nb, path)
    assert publish.changes(recorded, publish.code_digest(path, tree)) == []


def fake_run(tree, name="vit", profile="test-profile"):
    """A run of ``name`` published for ``profile`` in ``tree``, digest of the current code."""
    folder = tree / publish.RUNS / profile
    (folder / publish.RECORDS).mkdir(parents=True)
    shutil.copy2(tree / "book" / f"{name}.ipynb", folder / f"{name}.ipynb")
    record = {
        "notebook": name, "epochs": 7, "n_train": 45000, "n_test": 10000,
        "keras_version": "3.x", "backend": "tensorflow", "backend_version": "2.x",
        "precision": "mixed_bfloat16",
        "published": {
            "profile": profile, "commit": "0123456789abcdef", "dirty": False,
            "started_at": "2026-12-01T20:00:00+00:00",
            "machine": {"cpu": "Some CPU", "cores": 2, "memory_gib": 23.6},
            "dataset": {"label": "CIFAR-10 (JPEG copy)", "sha256": "4f3fe057f096" + "0" * 52},
            "notebook_seconds": 600.0,
            "code_digest": publish.code_digest(tree / "book" / f"{name}.ipynb", tree),
        },
    }
    (folder / publish.RECORDS / f"{name}.json").write_text(json.dumps(record))
    return record


def test_a_published_page_says_which_run_and_warns_once_the_code_changed(tree):
    fake_run(tree)
    site = tree / "site"
    (site / "book").mkdir(parents=True)

    assert publish.show_published("test-profile", site, tree) == {"vit": []}
    nb = nbformat.read(site / "book/vit.ipynb", as_version=4)
    notice = next(c for c in nb.cells if "published-run" in c.metadata.get("tags", []))
    assert nb.cells.index(notice) == 2  # after the badge and the introduction
    assert "current" in notice.metadata["tags"] and "{warning}" not in notice.source
    for words in ("`test-profile` profile on CIFAR-10 (JPEG copy)", "4f3fe057f096…",
                  "7 epochs", "45,000 training", "in mixed_bfloat16, Some CPU, 2 cores", "commit `0123456789`",
                  "10 minutes", "2026-12-01"):
        assert words in notice.source, words
    assert (site / publish.RUNS / "test-profile" / publish.RECORDS / "vit.json").is_file()
    # showing it again (a partial rebuild) writes the same page, byte for byte
    before = (site / "book/vit.ipynb").read_bytes()
    publish.show_published("test-profile", site, tree)
    assert (site / "book/vit.ipynb").read_bytes() == before

    edit_cell(tree / "book/vit.ipynb", "plot_learning_curves(", "plot_learning_curves (")
    report = publish.show_published("test-profile", site, tree)
    assert report == {"vit": ["1 code cell of the notebook changed"]}
    nb = nbformat.read(site / "book/vit.ipynb", as_version=4)
    notice = next(c for c in nb.cells if "published-run" in c.metadata.get("tags", []))
    assert "stale" in notice.metadata["tags"]
    assert "{warning}" in notice.source and "1 code cell of the notebook changed" in notice.source
    assert "python -m helpers.book.publish test-profile" in notice.source


def test_the_note_shows_the_start_of_the_datasets_digest_and_the_whole_of_it_on_hover(tmp_path):
    """The published-run note, as the site's MyST parser renders it."""
    from sphinx.application import Sphinx

    digest = "4f3fe057f096" + "0123456789abcdef" * 3 + "0123"
    record = {
        "epochs": 7, "n_train": 45000, "n_test": 10000, "keras_version": "3.x",
        "backend": "tensorflow", "backend_version": "2.x",
        "published": {
            "profile": "p", "commit": "0123456789abcdef", "started_at": "2026-12-01T20:00",
            "machine": {"cpu": "Some CPU", "cores": 2}, "notebook_seconds": 600.0,
            "dataset": {"label": "CIFAR-10 (JPEG copy)", "sha256": digest}},
    }
    source = tmp_path / "source"
    source.mkdir()
    (source / "conf.py").write_text('extensions = ["myst_parser"]\n')
    (source / "index.md").write_text(
        f"# Page\n\n```{{note}}\n{publish.describe(record)}\n```\n")
    app = Sphinx(str(source), str(source), str(tmp_path / "out"), str(tmp_path / "doctrees"),
                 "html", status=None, warning=None, freshenv=True)
    app.build()
    page = (tmp_path / "out" / "index.html").read_text()
    assert len(digest) == 64
    assert f'<abbr title="SHA-256 {digest}">4f3fe057f096…</abbr>' in page
    assert page.count(digest) == 1  # once, on hover: the text shows 12 digits


def test_the_check_command_reports_stale_runs(tree, monkeypatch, capsys):
    fake_run(tree)
    monkeypatch.setattr(publish, "ROOT", tree)
    monkeypatch.setattr(publish.stale, "__defaults__", (tree,))
    monkeypatch.setattr(publish.published_runs, "__defaults__", (tree,))
    assert publish.main(["test-profile", "--check"]) == 0
    assert "vit: current" in capsys.readouterr().out
    helper = tree / "helpers/harness/plots.py"
    helper.write_text(helper.read_text() + "\n# edited\n")
    assert publish.main(["test-profile", "--check"]) == 1
    assert "vit: stale: helpers/harness/plots.py changed" in capsys.readouterr().out
    assert publish.main(["no-such-profile", "--check"]) == 1


def test_the_machine_is_described():
    info = publish.machine()
    assert info["cpu"] and info["cores"] >= 1


def test_every_paper_has_a_published_cifar10_run_with_its_provenance():
    runs = publish.published_runs(PUBLISHED)
    assert sorted(runs) == sorted(nb.stem for nb in model_notebooks(ROOT))
    for name, record in runs.items():
        pub = record["published"]
        assert pub["profile"] == PUBLISHED and len(pub["commit"]) == 40, name
        assert pub["dataset"]["label"] == "CIFAR-10 (JPEG copy)", name
        assert pub["dataset"]["sha256"] == (
            "4f3fe057f096dcf65c943e59ff881c50de89d6a379087902916449483d71d1d4"), name
        assert pub["machine"]["cpu"] and pub["machine"]["cores"] >= 1, name
        assert pub["notebook_seconds"] > record["train_seconds"] > 0, name
        assert record["n_test"] == 10_000 and record["num_classes"] == 10, name
        assert record["test_top1"] >= PUBLISHED_FLOORS.get(name, 0.6), (name, record["test_top1"])
        nb = nbformat.read(ROOT / publish.RUNS / PUBLISHED / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "error"]
        assert not errors, name


def test_what_is_published_stays_small():
    size = sum(p.stat().st_size for p in (ROOT / publish.RUNS).rglob("*") if p.is_file())
    assert size < 8 * 2**20, f"{size / 2**20:.1f} MiB"


def test_a_current_page_shows_todays_prose_around_the_runs_outputs(tree):
    fake_run(tree)
    published = tree / publish.RUNS / "test-profile" / "vit.ipynb"
    nb = nbformat.read(published, as_version=4)
    trained = next(c for c in nb.cells if c.cell_type == "code" and "run.train(" in c.source)
    trained.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Epoch 7/7 ...\n")]
    parameters = next(i for i, c in enumerate(nb.cells)
                      if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell("epochs = 7")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(parameters + 1, injected)
    nbformat.write(nb, published)
    source = nbformat.read(tree / "book/vit.ipynb", as_version=4)
    source.cells[1].source += "\n\nA sentence written after the run."
    nbformat.write(source, tree / "book/vit.ipynb")

    site = tree / "site"
    (site / "book").mkdir(parents=True)
    assert publish.show_published("test-profile", site, tree) == {"vit": []}
    page = nbformat.read(site / "book/vit.ipynb", as_version=4)
    assert "A sentence written after the run." in page.cells[1].source
    shown = next(c for c in page.cells if c.cell_type == "code" and "run.train(" in c.source)
    assert shown.outputs[0]["text"] == "Epoch 7/7 ...\n"
    tags = [c.metadata.get("tags", []) for c in page.cells]
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1
    assert len(page.cells) == len(source.cells) + 2  # the injected cell and the note


def test_a_page_keeps_todays_prose_while_only_helpers_changed_and_the_runs_after_a_code_change(tree):
    """A stale page warns either way; while the notebook's own code cells are those
    of the run (a helper changed), its Markdown is today's; once they differ, the
    run's own Markdown stays with the outputs it describes."""
    fake_run(tree)
    source = nbformat.read(tree / "book/vit.ipynb", as_version=4)
    source.cells[1].source += "\n\nA sentence written after the run."
    nbformat.write(source, tree / "book/vit.ipynb")
    helper = tree / "helpers/harness/plots.py"
    helper.write_text(helper.read_text() + "\n# edited\n")
    site = tree / "site"
    (site / "book").mkdir(parents=True)

    assert publish.show_published("test-profile", site, tree) == {
        "vit": ["helpers/harness/plots.py changed"]}
    page = nbformat.read(site / "book/vit.ipynb", as_version=4)
    assert "A sentence written after the run." in page.cells[1].source
    assert "stale" in page.cells[2].metadata["tags"]

    edit_cell(tree / "book/vit.ipynb", "plot_learning_curves(", "plot_learning_curves (")
    publish.show_published("test-profile", site, tree)
    page = nbformat.read(site / "book/vit.ipynb", as_version=4)
    assert "A sentence written after the run." not in page.cells[1].source
    assert "stale" in page.cells[2].metadata["tags"]


def test_a_page_shows_the_datasets_file_name_not_where_it_lay_on_the_machine_that_ran_it(tree):
    fake_run(tree)
    published = tree / publish.RUNS / "test-profile" / "vit.ipynb"
    nb = nbformat.read(published, as_version=4)
    where = "/somewhere/on/that/machine/cifar10-jpeg.zip"
    nb.metadata["papermill"] = {"parameters": {"dataset": where, "epochs": 7},
                                "input_path": "/somewhere/on/that/machine/book/vit.ipynb"}
    trained = next(c for c in nb.cells if c.cell_type == "code" and "run.train(" in c.source)
    trained.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"{where}: decoding 60,000 images\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": f"'{where}'"}),
    ]
    parameters = next(i for i, c in enumerate(nb.cells)
                      if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell(f'# Parameters\ndataset = "{where}"\nepochs = 7\n')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(parameters + 1, injected)
    nbformat.write(nb, published)

    site = tree / "site"
    (site / "book").mkdir(parents=True)
    publish.show_published("test-profile", site, tree)
    page = (site / "book/vit.ipynb").read_text()
    assert "/somewhere/on/that/machine" not in page
    shown = nbformat.read(site / "book/vit.ipynb", as_version=4)
    cell = next(c for c in shown.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'dataset = "cifar10-jpeg.zip"' in cell.source and "shortened" in cell.source
    trained = next(c for c in shown.cells if c.cell_type == "code" and "run.train(" in c.source)
    assert trained.outputs[0]["text"] == "cifar10-jpeg.zip: decoding 60,000 images\n"
    assert trained.outputs[1]["data"]["text/plain"] == "'cifar10-jpeg.zip'"
    # the published copy and its record are left as they ran
    assert where in published.read_text()
