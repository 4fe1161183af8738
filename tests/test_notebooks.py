"""Static checks of the committed notebooks, and their parameter handling."""

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

import nbformat
import papermill
import pytest

from helpers.book.runner import SUMMARY_PAGES, toc_notebooks
from helpers.harness.parameters import COMMON_PARAMETERS

from conftest import ROOT, START_CALL, assert_stops_before_loading_data

NOTEBOOKS = toc_notebooks(ROOT)


def parameters_cell(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path} needs exactly one cell tagged 'parameters'"
    return cells[0]


@pytest.mark.keras_free
def test_the_book_has_the_vit_notebook():
    assert [nb.stem for nb in NOTEBOOKS][:1] == ["vit"]


# Absolute paths of a developer's machine or of a run: /home/..., /Users/..., /tmp/...,
# C:\\Users\\..., file:// links.
LOCAL_PATH = re.compile(r"(?<![\w.])(/(home|Users|tmp|root|work|var/folders|mnt)/|[A-Za-z]:\\\\|file://)")


@pytest.mark.keras_free
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_counts_or_run_metadata(path):
    nb = json.loads((ROOT / path).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
        assert not {"execution", "papermill"} & set(cell["metadata"])
    assert not {"papermill", "widgets"} & set(nb["metadata"])


@pytest.mark.keras_free
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_local_paths(path):
    text = (ROOT / path).read_text()
    assert not LOCAL_PATH.search(text), LOCAL_PATH.search(text).group(0)


@pytest.mark.keras_free
def test_the_local_path_check_catches_what_it_should():
    for bad in ('"/home/ana/cifar.npz"', "'/tmp/run/x.json'", '"C:\\\\data"', "file:///x"):
        assert LOCAL_PATH.search(bad), bad
    for fine in ('"results/vit.json"', "https://github.com/org/repo", "x / 255", '"./data.npz"'):
        assert not LOCAL_PATH.search(fine), fine


@pytest.mark.keras_free
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_is_typed_commented_and_seen_by_papermill(path):
    source = parameters_cell(ROOT / path).source
    annotated = [node.target.id for node in ast.parse(source).body if isinstance(node, ast.AnnAssign)]
    assigned = [node for node in ast.parse(source).body if isinstance(node, ast.Assign)]
    assert not assigned, "every parameter needs a type annotation"
    if path.stem not in SUMMARY_PAGES:  # a summary page trains nothing
        assert set(COMMON_PARAMETERS) <= set(annotated)
    for line in source.splitlines():
        if line and not line.startswith("#"):
            assert "  # " in line, f"parameter line without a comment: {line}"
    declared = papermill.inspect_notebook(str(ROOT / path))
    assert list(declared) == annotated  # papermill parses each line


@pytest.mark.keras_free
def test_vit_defaults_are_the_full_recipe():
    declared = papermill.inspect_notebook(str(ROOT / "book/vit.ipynb"))
    defaults = {name: ast.literal_eval(info["default"]) for name, info in declared.items()}
    assert defaults | {
        "dataset": "cifar100", "image_size": 72, "patch_size": 6, "transformer_layers": 8,
        "projection_dim": 64, "num_heads": 4, "mlp_head_units": [2048, 1024], "epochs": 100,
        "batch_size": 256, "learning_rate": 1e-3, "weight_decay": 1e-4,
    } == defaults


@pytest.mark.parametrize("parameters,message", [
    ({"patch_size": 5}, "parameter patch_size must divide image_size=72, got 5"),
    ({"epochs": "ten"}, "parameter epochs must be an integer, got 'ten'"),
    ({"lr_schedule": "step"}, "parameter lr_schedule must be one of 'constant', 'cosine'"),
    ({"dataset": "imagenet"}, "parameter dataset must be one of cifar10, cifar100, digits or"),
    ({"learning_rate": 0}, "parameter learning_rate must be > 0, got 0.0"),
    ({"patchsize": 4}, "parameter patchsize is not declared by this notebook: did you mean "
                       "patch_size"),
])
def test_bad_parameters_stop_the_vit_notebook_at_once(parameters, message, monkeypatch):
    assert_stops_before_loading_data(ROOT / "book/vit.ipynb", parameters, message, monkeypatch)


@pytest.mark.slow
def test_vit_notebook_trains_on_a_local_npz_with_its_own_classes(tmp_path, digits):
    """A 5-class .npz runs in the notebook whose default is CIFAR-100 (100 classes)."""
    keep_train, keep_test = digits.y_train < 5, digits.y_test < 5
    path = tmp_path / "five_digits.npz"
    np.savez(path, x_train=digits.x_train[keep_train], y_train=digits.y_train[keep_train],
             x_test=digits.x_test[keep_test], y_test=digits.y_test[keep_test])
    parameters = {"dataset": str(path), "epochs": 2, "batch_size": 64, "image_size": 16,
                  "patch_size": 4, "projection_dim": 16, "num_heads": 2,
                  "transformer_layers": 1, "mlp_head_units": [32], "results_dir": "out"}
    papermill.execute_notebook(str(ROOT / "book/vit.ipynb"), str(tmp_path / "vit.ipynb"),
                               parameters=parameters, kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path))
    record = json.loads((tmp_path / "out" / "vit.json").read_text())
    assert record["dataset"] == path.name and record["num_classes"] == 5
    assert record["parameters"]["dataset"] == str(path)
    assert record["n_train"] + record["n_validation"] == int(keep_train.sum())
    assert record["n_test"] == int(keep_test.sum())
    assert record["test_top1"] > 0.3  # chance is 0.2


@pytest.mark.slow
def test_a_notebook_killed_mid_training_resumes_when_run_again(tmp_path):
    """SIGKILL papermill and its kernel mid-training; the same command then finishes the run."""
    command = [sys.executable, "-m", "papermill", str(ROOT / "book/vit.ipynb"),
               str(tmp_path / "vit.ipynb"), "--cwd", str(tmp_path), "-k", "python3",
               "--no-progress-bar"]
    for name, value in {"dataset": "digits", "epochs": 8, "batch_size": 64, "image_size": 16,
                        "patch_size": 4, "projection_dim": 16, "num_heads": 2,
                        "transformer_layers": 1, "mlp_head_units": [32],
                        "results_dir": "out"}.items():
        command += ["-y", f"{name}: {json.dumps(value)}"]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while True:
        logs = list((tmp_path / "out" / "backups").glob("vit-*/run_log.json"))
        # Three epochs logged: the log is written just before the epoch's
        # backup, so a kill between the two still leaves two backed-up epochs.
        if logs and len(json.loads(logs[0].read_text())["epochs"]) >= 3:
            break
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "training never reached its third epoch"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # papermill and its kernel, without warning
    first.wait()
    assert not (tmp_path / "out" / "vit.json").exists()

    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "vit.json").read_text())
    assert record["epochs"] == 8 and len(record["history"]["loss"]) == 8
    assert 2 <= record["resumed_epochs"] < 8
    executed = nbformat.read(tmp_path / "vit.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert f"Epoch {record['resumed_epochs'] + 1}/8" in text and "Epoch 1/8" not in text
    assert f"resumed after epoch {record['resumed_epochs']}" in text


@pytest.mark.parametrize("parameters,message", [
    ({"results_dir": "no_such_folder"},
     "parameter results_dir must be a folder of records, got 'no_such_folder'"),
    ({"results_dir": "."}, "parameter results_dir must hold a record of at least one notebook"),
    ({"profile": 3}, "parameter profile must be a string, got 3"),
    ({"profle": "smoke"}, "parameter profle is not declared by this notebook: did you mean profile"),
])
def test_bad_parameters_stop_the_results_page_at_once(parameters, message, monkeypatch):
    assert_stops_before_loading_data(ROOT / "book/results.ipynb", parameters, message, monkeypatch)


TRAINING_NOTEBOOKS = [nb for nb in NOTEBOOKS if nb.stem not in SUMMARY_PAGES]


def code_lines_before_the_papers_first_code(path):
    """Non-comment code lines of the code cells between the parameters cell and the
    paper's first code: the first cell that is exported (``# @save``) or defines a
    class or a function at its top level. (Before the harness: vit 39, spt_lsa 45,
    perceiver 52, cct 66, shiftvit 81.)"""
    cells = [c for c in nbformat.read(ROOT / path, as_version=4).cells if c.cell_type == "code"]
    index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    count = 0
    for cell in cells[index + 1:]:
        source = cell.source
        if source.startswith("# @save") or any(
                isinstance(node, (ast.FunctionDef, ast.ClassDef))
                for node in ast.parse(source).body):
            return count
        count += sum(1 for line in source.splitlines()
                     if line.strip() and not line.strip().startswith("#"))
    raise AssertionError(f"{path} defines no class or function")


@pytest.mark.keras_free
@pytest.mark.parametrize("path", TRAINING_NOTEBOOKS, ids=lambda p: p.stem)
def test_the_papers_first_code_comes_within_20_lines_of_the_parameters_cell(path):
    count = code_lines_before_the_papers_first_code(path)
    print(f"{path.stem}: {count} code lines between the parameters and the first definition")
    assert count <= 20


@pytest.mark.keras_free
@pytest.mark.parametrize("path", TRAINING_NOTEBOOKS, ids=lambda p: p.stem)
def test_the_plumbing_cells_are_collapsed_on_the_site(path):
    cells = [c for c in nbformat.read(ROOT / path, as_version=4).cells if c.cell_type == "code"]
    tags = {name: [c.metadata.get("tags", []) for c in cells if name in c.source]
            for name in ("run.finish(", 'if "google.colab" in sys.modules')}
    starts = [i for i, c in enumerate(cells) if START_CALL.search(c.source)]
    assert [cells[i].metadata.get("tags") for i in starts] == [["hide-input"]]  # output shows
    assert [t for t in tags["run.finish("] if "hide-input" in t]
    assert tags['if "google.colab" in sys.modules'] == [["colab-setup", "hide-cell"]]
    params = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert starts == [params[0] + 1]  # right after the parameters cell


# Sentences every notebook used to repeat: said once now, in the intro.
REPEATED_PROSE = (
    "Every setting of the run is in the next cell",
    "The parameters are checked before anything heavy runs",
    "runs this notebook unchanged on TensorFlow, JAX or PyTorch",
    "Training backs itself up after every epoch",
    "A site built with the `smoke` profile",
)


@pytest.mark.keras_free
@pytest.mark.parametrize("path", TRAINING_NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_shared_by_every_notebook_lives_once_in_the_intro(path):
    text = "".join(c.source for c in nbformat.read(ROOT / path, as_version=4).cells
                   if c.cell_type == "markdown")
    assert not [sentence for sentence in REPEATED_PROSE if sentence in text]
    assert "{ref}`parameters`" in text or "<parameters>`" in text
    assert "{ref}`smoke-builds`" in text or "<smoke-builds>`" in text
    intro = (ROOT / "book" / "intro.md").read_text()
    for label in ("parameters", "backends", "resuming", "smoke-builds"):
        assert f"({label})=" in intro


@pytest.mark.parametrize("path", TRAINING_NOTEBOOKS, ids=lambda p: p.stem)
def test_a_misspelled_parameter_stops_the_notebook_naming_the_declared_one(path, monkeypatch):
    """The notebook's first declared model parameter, with one letter dropped."""
    source = parameters_cell(ROOT / path).source
    declared = [node.target.id for node in ast.parse(source).body
                if isinstance(node, ast.AnnAssign)]
    name = next(n for n in declared if n not in COMMON_PARAMETERS and len(n) > 6)
    typo = name[:3] + name[4:]
    value = ast.literal_eval(next(node.value for node in ast.parse(source).body
                                  if isinstance(node, ast.AnnAssign) and node.target.id == name))
    assert_stops_before_loading_data(
        ROOT / path, {typo: value},
        f"parameter {typo} is not declared by this notebook: did you mean {name}", monkeypatch)


@pytest.mark.slow
def test_plain_papermill_rejects_an_undeclared_name_with_a_suggestion(tmp_path):
    """A real kernel: the injected cell reaches ``start`` through IPython's history."""
    output = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(ROOT / "book/perceiver.ipynb"), str(output),
                                   parameters={"latent_dim": 64}, kernel_name="python3",
                                   progress_bar=False, cwd=str(tmp_path))
    assert failure.value.ename == "ValueError"
    assert "parameter latent_dim is not declared by this notebook: did you mean num_latents" \
        in failure.value.evalue
    executed = nbformat.read(output, as_version=4)
    assert not any("training on" in o.get("text", "") for c in executed.cells
                   if c.cell_type == "code" for o in c.get("outputs", []))


# A quantity a run measures, typed as a literal in a sentence or a table row: a speed
# ratio ("6.5 times faster", "7x faster", "2× slower"), an accuracy ("66.5% top-1",
# "top-1 of 63.2%"), a learned temperature or an attention spread with its value. Such a
# number must come from the run's record (glue, or a sentence generated in a code cell).
# A sentence or row that cites a source ({cite}) quotes that source's number, not a run's.
MEASURED = re.compile(
    r"\d[\d,.]*\s*(?:times|×|x)\s+(?:faster|slower|the speed|as fast)"
    r"|\d[\d,.]*\s*%\s*(?:top-[15]|accuracy|of the (?:test|validation))"
    r"|(?:top-[15]|accuracy)\s+(?:of\s+|reached\s+|at\s+)?\d[\d,.]*\s*%"
    r"|temperatures?\b[^.|]*?\b(?:fell|rose|dropped|ended|moved|reached)\b[^.|]*?\d\.\d"
    r"|spreads?\b[^.|]*?\bover\s+(?:about\s+)?\d[\d,.]*\s+(?:of|tokens|inputs|patches)",
    re.IGNORECASE)


def typed_measurements(markdown: str) -> list[str]:
    """The sentences and table rows of ``markdown`` that type a run's measured quantity."""
    found = []
    for part in re.split(r"(?<=[.!?])\s+|\n(?=\|)", markdown):
        if "{cite}" in part:
            continue
        without_glue = re.sub(r"\{glue:\w+\}`[^`]*`", "GLUED", part)
        if MEASURED.search(without_glue):
            found.append(part.strip())
    return found


@pytest.mark.keras_free
def test_the_typed_measurement_check_catches_what_it_should():
    assert typed_measurements("At M = 2048 cross-attention is 6.5 times faster.")
    assert typed_measurements("The run printed 7x faster than self-attention.")
    assert typed_measurements("SL-ViT reached 66.5% top-1 after five epochs.")
    assert typed_measurements("| ViT | top-1 of 63.15% | this run |")
    assert typed_measurements("The temperatures fell from 8.0 to 6.50 in every block.")
    assert typed_measurements("The pooling spreads its weight over about 50.3 of 64 tokens.")
    # numbers from the record, a source's numbers and costs worked out from the parameters
    assert not typed_measurements(
        "Cross-attention is {glue:text}`perceiver_scaling_speedup` times faster; the "
        "example reached 76.38% top-1 {cite}`gosthipaty2022shiftvitexample`. Patch 4 gives "
        "324 tokens instead of 144: attention costs about 5× more.")
    assert not typed_measurements("| source {cite}`lee2021vitsmall` | 73.81% | 76.92% |")


@pytest.mark.keras_free
@pytest.mark.parametrize("path", TRAINING_NOTEBOOKS, ids=lambda p: p.stem)
def test_paper_prose_types_no_number_that_a_run_measures(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    typed = [found for cell in nb.cells if cell.cell_type == "markdown"
             for found in typed_measurements(cell.source)]
    assert not typed, typed


@pytest.mark.keras_free
@pytest.mark.parametrize("path", TRAINING_NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_of_a_paper_notebook_is_sized_for_the_page(path):
    """Figures drawn wider than the page's column are shown shrunk, their text too
    small to read: every ``figsize`` of a paper notebook comes from ``figure_size``."""
    sources = [c.source for c in nbformat.read(ROOT / path, as_version=4).cells
               if c.cell_type == "code"]
    sizes = [m.group(1) for s in sources for m in re.finditer(r"figsize=([^,)]+(?:\([^)]*\))?)", s)]
    assert sizes and all(size.startswith("figure_size(") for size in sizes), sizes


@pytest.mark.keras_free
@pytest.mark.parametrize("path", TRAINING_NOTEBOOKS, ids=lambda p: p.stem)
def test_analysis_samples_are_stratified_not_the_first_test_images(path):
    """A dataset read from an image folder is sorted by class: ``x_test[:N]`` would be
    N images of one class."""
    sources = "\n".join(c.source for c in nbformat.read(ROOT / path, as_version=4).cells
                        if c.cell_type == "code")
    assert not re.search(r"[xy]_test\[:\s*\d", sources)
    assert not re.search(r"\{dataset\}", sources)  # titles show data.label, never the path
