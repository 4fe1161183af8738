"""The runner's command line and partial runs (helpers.book.runner)."""

import os
import shutil
from pathlib import Path

import nbformat
import pytest

from helpers.book import runner as book
from helpers.harness.records import read_record

from conftest import ROOT

pytestmark = pytest.mark.keras_free  # see conftest.py


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("1e-3", 1e-3), ("-2.5E+2", -250.0), ("[64, 32]", [64, 32]),
    ("true", True), ("cifar10", "cifar10"), ("data/my.npz", "data/my.npz"), ("1e-3x", "1e-3x"),
])
def test_command_line_values_are_read_as_yaml_with_exponents_as_floats(text, value):
    parsed = book._parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_a_partial_site_build_needs_the_other_notebooks_executed_before(tmp_path):
    with pytest.raises(book.BookError, match="has no executed book/spt_lsa.ipynb"):
        book.run("smoke", source=ROOT, build_dir=tmp_path, only=["vit"])
    assert not (tmp_path / "site").exists()  # refused before anything ran


def test_shared_values_go_only_to_the_notebooks_that_declare_them(tmp_path):
    profile = book.load_profile(ROOT, "smoke")
    results = Path("book/results.ipynb")
    declared = book.declared_parameters(ROOT / results)
    parameters = book.notebook_parameters(profile, results, {"epochs": 3}, declared)
    assert parameters == {}  # the runner adds profile
    vit = Path("book/vit.ipynb")
    parameters = book.notebook_parameters(profile, vit, {"epochs": 3},
                                          book.declared_parameters(ROOT / vit))
    assert parameters["epochs"] == 3 and parameters["patch_size"] == 4
    # a name that none of the executed notebooks declares is still an error
    with pytest.raises(book.BookError, match="unknown parameter\\(s\\) epochs: no executed"):
        book.run("smoke", source=ROOT, build_dir=tmp_path, only=["results"],
                 overrides={"epochs": 1}, html=False)


@pytest.mark.slow
def test_a_run_of_one_notebook_keeps_the_other_executed_pages(smoke_build, tmp_path):
    shutil.copytree(smoke_build["site"], tmp_path / "site")
    result = book.run("smoke", source=ROOT, build_dir=tmp_path, only=["vit"],
                      overrides={"epochs": 1})
    assert list(result["seconds"]) == ["vit", *book.SUMMARY_PAGES]  # the summary pages follow
    records = result["site"] / "book" / "results"
    assert read_record(records / "vit.json")["epochs"] == 1
    assert result["index"].is_file()
    for notebook in book.toc_notebooks(ROOT):
        assert (result["site"] / "_build" / "html" / notebook.with_suffix(".html")).is_file()
        copy = nbformat.read(result["site"] / notebook, as_version=4)
        assert any(c.get("outputs") for c in copy.cells if c.cell_type == "code"), notebook
        if notebook.stem not in book.SUMMARY_PAGES:
            assert (records / f"{notebook.stem}.json").is_file()
        if notebook.stem not in ("vit", *book.SUMMARY_PAGES):  # previous build, unchanged
            assert (result["site"] / notebook).read_bytes() == (smoke_build["site"] / notebook).read_bytes()


def test_every_citation_of_the_book_is_in_the_bibliography():
    import re

    import pybtex.database

    keys = set(pybtex.database.parse_file(str(ROOT / "references.bib")).entries)
    cited = set()
    for path in (ROOT / "book").glob("*.*"):
        if path.suffix in (".md", ".ipynb"):
            for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text()):
                cited.update(key.strip() for key in group.split(","))
    assert cited and cited <= keys, sorted(cited - keys)


# Numbers the book quotes from the source examples, their official repositories and the
# papers: wherever one appears in the book's prose, the same paragraph or table row cites it.
SOURCE_NUMBERS = ("55.14%", "81.86%", "53.10%", "80.53%", "56.11%", "82.27%", "52.64%",
                  "80.87%", "76.38%", "98.55%", "89.17%", "96.5%", "76.92%", "73.81%", "81.7%",
                  "about 79%")


def book_paragraphs():
    """(page, paragraph) for every markdown paragraph and table row of the book's pages."""
    import nbformat

    for path in sorted((ROOT / "book").glob("*.*")):
        if path.suffix == ".md":
            texts = [path.read_text()]
        elif path.suffix == ".ipynb":
            texts = [c.source for c in nbformat.read(path, as_version=4).cells
                     if c.cell_type == "markdown"]
        else:
            continue
        for text in texts:
            for paragraph in text.split("\n\n"):
                rows = paragraph.splitlines() if paragraph.lstrip().startswith("|") else [paragraph]
                for row in rows:
                    yield path.name, row


def test_every_number_quoted_from_a_source_cites_it():
    uncited = [(page, number, row.strip()[:90]) for page, row in book_paragraphs()
               for number in SOURCE_NUMBERS if number in row and "{cite" not in row]
    assert not uncited, uncited


def test_the_environment_of_a_run_is_put_back_even_after_an_error(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.delenv("BOOK_TEST_FLAG", raising=False)
    with pytest.raises(RuntimeError):
        with book.environment_variables(KERAS_BACKEND="jax", BOOK_TEST_FLAG="1"):
            assert os.environ["KERAS_BACKEND"] == "jax"
            raise RuntimeError("a failed cell")
    assert os.environ["KERAS_BACKEND"] == "tensorflow"
    assert "BOOK_TEST_FLAG" not in os.environ


def source_copy(tmp_path):
    """The files a build is made from, copied to ``tmp_path / "source"``."""
    source = tmp_path / "source"
    for name in book.SOURCE_FILES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    def ignore(folder, names):  # caches, and the records of local runs in book/results
        return [n for n in names if n == "__pycache__"
                or (n == "results" and Path(folder) == ROOT / "book")]

    for folder in book.SOURCE_FOLDERS:
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    return source


def test_the_runner_refuses_a_stale_export_before_anything_runs(tmp_path):
    source = source_copy(tmp_path)
    module = source / "helpers" / "papers" / "vit.py"
    module.write_text(module.read_text() + "\n# edited by hand\n")
    with pytest.raises(book.BookError, match=r"out of date: helpers/papers/vit.py; run python "
                                             r"-m helpers.book.export"):
        book.run("smoke", source=source, build_dir=tmp_path / "build", html=False)
    assert not (tmp_path / "build").exists()


def test_a_build_is_reused_only_while_its_sources_are_unchanged(tmp_path):
    source = source_copy(tmp_path)
    site = source / "_build" / "site"
    (site / "_build" / "html").mkdir(parents=True)
    (site / "_build" / "html" / "index.html").write_text("<html></html>")
    book.write_manifest(site, source, profile="smoke", backend="tensorflow",
                        seconds={"vit": 1.0}, complete=True)
    assert book.reusable_build(source, Path("_build"), "smoke", "tensorflow")["site"] == site
    assert book.reusable_build(source, Path("_build"), "smoke", "jax") is None
    assert book.reusable_build(source, Path("_build"), "full", "tensorflow") is None
    helper = source / "helpers" / "harness" / "plots.py"
    helper.write_text(helper.read_text() + "\n")  # any change to a source file
    assert book.reusable_build(source, Path("_build"), "smoke", "tensorflow") is None
    book.write_manifest(site, source, profile="smoke", backend="tensorflow",
                        seconds={}, complete=False)  # a partial run: --notebooks, -p
    assert book.reusable_build(source, Path("_build"), "smoke", "tensorflow") is None


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True, "2"])
def test_jobs_must_be_a_whole_number_of_at_least_one(tmp_path, jobs):
    with pytest.raises(book.BookError, match=f"jobs must be a whole number of at least 1, got "):
        book.run("smoke", source=ROOT, build_dir=tmp_path, jobs=jobs, html=False)
    assert not (tmp_path / "site").exists()


def tiny_notebooks(folder: Path, sources: dict) -> list:
    """One-cell notebooks ``book/<name>.ipynb`` under ``folder``; returns the plan."""
    (folder / "book").mkdir(parents=True, exist_ok=True)
    plan = []
    for name, code in sources.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, folder / "book" / f"{name}.ipynb")
        plan.append((Path("book") / f"{name}.ipynb", {}))
    return plan


def test_notebooks_executed_side_by_side_label_each_line_of_their_output(tmp_path, capfd):
    source, site = tmp_path / "source", tmp_path / "site"
    plan = tiny_notebooks(source, {
        name: f"import time\nfor i in range(3):\n    print('{name} line', i, end='')\n"
              f"    time.sleep(0.2)\n    print()"
        for name in ("first", "second", "third")
    })
    (site / "book").mkdir(parents=True)
    seconds = book.execute_all(source, site, plan, "tensorflow", jobs=2)
    assert list(seconds) == ["first", "second", "third"]  # the plan's order
    out = capfd.readouterr().out
    for name in seconds:
        executed = nbformat.read(site / "book" / f"{name}.ipynb", as_version=4)
        assert "".join(o["text"] for o in executed.cells[0].outputs) == "".join(
            f"{name} line {i}\n" for i in range(3))
        # whole lines, each after its notebook's name, however the kernel split them
        assert [line for line in out.splitlines() if f"{name} line" in line] == [
            f"[{name}] {name} line {i}" for i in range(3)]
        assert f"== book/{name}.ipynb done in" in out


def test_a_notebook_failing_beside_others_stops_the_run_naming_it(tmp_path):
    source, site = tmp_path / "source", tmp_path / "site"
    plan = tiny_notebooks(source, {"fine": "print('fine')",
                                   "broken": "raise ValueError('no such layer')",
                                   "later": "print('later')"})
    (site / "book").mkdir(parents=True)
    with pytest.raises(book.BookError, match=r"book/broken.ipynb failed in cell 1: ValueError: "
                                             r"no such layer"):
        book.execute_all(source, site, plan, "tensorflow", jobs=2)


@pytest.mark.parametrize("devices, backend, overrides, message", [
    (1, "jax", {}, "cpu_devices must be a whole number of at least 2, got 1"),
    (True, "jax", {}, "cpu_devices must be a whole number of at least 2, got True"),
    ("2", "jax", {}, "cpu_devices must be a whole number of at least 2, got '2'"),
    (2, "tensorflow", {}, "cpu_devices splits the CPU for the JAX backend, not tensorflow"),
    (2, "torch", {}, "cpu_devices splits the CPU for the JAX backend, not torch"),
    (2, "jax", {"data_parallel": False}, "cpu_devices trains data-parallel: drop the"),
])
def test_cpu_devices_are_refused_where_they_cannot_work(tmp_path, devices, backend, overrides,
                                                       message):
    with pytest.raises(book.BookError, match=message):
        book.run("smoke", source=ROOT, build_dir=tmp_path, backend=backend, only=["vit"],
                 overrides=overrides, cpu_devices=devices, html=False)
    assert not (tmp_path / "site").exists()


def test_cpu_devices_give_the_kernels_jax_devices_and_data_parallel_notebooks(tmp_path, monkeypatch):
    seen = []

    def execute(source, site, notebook, parameters, backend, labelled=False):
        seen.append((notebook.stem, parameters.get("data_parallel"), os.environ.get("XLA_FLAGS")))
        return 1.0

    monkeypatch.setattr(book, "execute", execute)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/somewhere")
    book.run("smoke", source=ROOT, build_dir=tmp_path, backend="jax", only=["vit", "cct"],
             cpu_devices=2, html=False)
    flags = "--xla_dump_to=/tmp/somewhere " + book.cpu_device_flags(2)
    assert seen == [("vit", True, flags), ("cct", True, flags),
                    *((name, None, flags) for name in book.SUMMARY_PAGES)]
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/somewhere"  # put back afterwards
    assert "--xla_force_host_platform_device_count=2 " in book.cpu_device_flags(2)


def test_the_build_tree_gets_the_evidence_plan_and_records(tmp_path):
    """The results page and the paper pages read them at the same relative paths."""
    source = source_copy(tmp_path)
    record = source / "runs" / "evidence" / "cct" / "sequence" / "seed-0.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("{}")
    site = tmp_path / "site"
    book.prepare_tree(source, site)
    assert (site / "evidence.yml").read_bytes() == (source / "evidence.yml").read_bytes()
    assert (site / "runs" / "evidence" / "cct" / "sequence" / "seed-0.json").read_text() == "{}"
    assert "evidence.yml" in book.SOURCE_FILES  # a changed plan makes a build stale


def test_a_rebuilt_tree_keeps_the_backups_of_interrupted_training(tmp_path):
    """A long run cut off mid-training resumes after its last epoch when the build
    is started again: the tree is made anew, its backups carried over."""
    source = source_copy(tmp_path)
    site = tmp_path / "site"
    book.prepare_tree(source, site)
    backup = site / "book" / "results" / "backups" / "cct-0123456789" / "log.json"
    backup.parent.mkdir(parents=True)
    backup.write_text('{"epochs": 7}')
    (site / "book" / "stray.txt").write_text("from the last build")
    book.prepare_tree(source, site)
    assert backup.read_text() == '{"epochs": 7}'
    assert not (site / "book" / "stray.txt").exists()  # the rest is made anew
    assert not list(tmp_path.glob(".*-backups"))
    shutil.rmtree(backup.parent)
    book.prepare_tree(source, site)  # an empty backups folder is nothing to keep
    assert not (site / "book" / "results").exists()
