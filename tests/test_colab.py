"""The Colab badge and setup cell of every notebook (helpers.book.colab)."""

import os
import shutil
import subprocess
import sys
import types

import nbformat
import pytest
import yaml

from helpers.book import colab
from helpers.book.runner import toc_notebooks

from conftest import ROOT

pytestmark = pytest.mark.keras_free  # see conftest.py

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
URL, BRANCH = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]


def setup_cell(nb):
    (cell,) = [c for c in nb.cells if colab.SETUP_TAG in c.metadata.get("tags", [])]
    return cell


@pytest.mark.parametrize("notebook", toc_notebooks(ROOT), ids=lambda p: p.stem)
def test_every_notebook_opens_with_a_badge_and_a_setup_cell_that_agree_with_the_config(notebook):
    nb = nbformat.read(ROOT / notebook, as_version=4)
    badge, title, setup = nb.cells[:3]
    expected = (f"{CONFIG['launch_buttons']['colab_url']}/github/"
                f"{URL.removeprefix('https://github.com/')}/blob/{BRANCH}/{notebook.as_posix()}")
    assert badge.cell_type == "markdown" and f"]({expected})" in badge.source
    assert "remove-cell" in badge.metadata["tags"]  # the site has its own launch button
    assert title.source.startswith("# ")
    assert setup is setup_cell(nb) and f'"git+{URL}@{BRANCH}"' in setup.source
    assert (ROOT / notebook).is_file()  # the badge opens a committed notebook


def test_the_check_finds_nothing_stale_and_catches_a_changed_repository(tmp_path):
    assert colab.main(["--check", "--source", str(ROOT)]) == 0
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "book", tmp_path / "book",
                    ignore=shutil.ignore_patterns("results", "_build"))
    config = tmp_path / "_config.yml"
    config.write_text(config.read_text().replace(URL, "https://github.com/someone/fork")
                      .replace(f"branch: {BRANCH}", "branch: draft"))
    assert colab.main(["--check", "--source", str(tmp_path)]) == 1
    assert colab.main(["--source", str(tmp_path)]) == 0  # rewrites the cells
    assert colab.main(["--check", "--source", str(tmp_path)]) == 0
    nb = nbformat.read(tmp_path / "book" / "vit.ipynb", as_version=4)
    assert "/github/someone/fork/blob/draft/book/vit.ipynb)" in nb.cells[0].source
    assert '"git+https://github.com/someone/fork@draft"' in setup_cell(nb).source
    assert len(nb.cells) == len(nbformat.read(ROOT / "book" / "vit.ipynb", as_version=4).cells)


def run_setup(monkeypatch, source, on_colab, gpu=False):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        listed = "GPU 0: NVIDIA T4 (UUID: x)\n" if gpu else ""
        return types.SimpleNamespace(returncode=0 if gpu else 9, stdout=listed, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "setup", "exec"), {})
    return calls


def test_the_setup_cell_does_nothing_outside_colab(monkeypatch, capsys):
    source = setup_cell(nbformat.read(ROOT / "book" / "vit.ipynb", as_version=4)).source
    assert run_setup(monkeypatch, source, on_colab=False) == []
    assert os.environ["KERAS_BACKEND"] == "torch" and capsys.readouterr().out == ""


def test_on_colab_the_setup_cell_installs_from_the_repository_and_checks_for_a_gpu(
        monkeypatch, capsys):
    source = setup_cell(nbformat.read(ROOT / "book" / "cct.ipynb", as_version=4)).source
    calls = run_setup(monkeypatch, source.replace('"tensorflow"  #', '"jax"  #'), on_colab=True)
    assert calls[0][1:] == ["-m", "pip", "install", "--quiet", f"git+{URL}@{BRANCH}"]
    assert calls[1] == ["nvidia-smi", "-L"]
    assert os.environ["KERAS_BACKEND"] == "jax"
    out = capsys.readouterr().out
    assert "No GPU attached: Runtime > Change runtime type" in out and "Keras backend: jax" in out
    run_setup(monkeypatch, source, on_colab=True, gpu=True)
    out = capsys.readouterr().out
    assert "GPU 0: NVIDIA T4" in out and "No GPU" not in out
    assert os.environ["KERAS_BACKEND"] == "tensorflow"


def colab_versions() -> dict[str, str]:
    """Colab's runtime versions that the book is tested against (tests/colab-versions.txt)."""
    from helpers.book.install_sets import pins

    return {name: version for name, (version, _) in pins(ROOT / "tests" / "colab-versions.txt").items()}


def test_installing_the_helpers_on_colab_upgrades_none_of_its_packages():
    """The setup cell's ``pip install`` adds the helpers with pyproject's
    dependencies: every bound must admit the version Colab's runtime has."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    colab_has = colab_versions()
    checked = []
    for requirement in map(Requirement, project["dependencies"]):
        if requirement.name.lower() in colab_has:
            version = colab_has[requirement.name.lower()]
            assert requirement.specifier.contains(version), (str(requirement), version)
            checked.append(requirement.name)
    assert {"keras", "numpy", "ipywidgets"} <= set(checked)
