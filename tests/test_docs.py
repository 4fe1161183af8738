"""The reader's documents: the README's commands, numbers that come from records,
the performance page built from the committed benchmark records, and the
cross-references of the book's pages."""

import json
import math
import re
import shutil

import nbformat
import pytest
import yaml

from conftest import ROOT, assert_stops_before_loading_data

README = ROOT / "README.md"
PERFORMANCE = ROOT / "book" / "performance.ipynb"


def readme_step(text, marker):
    """The first line of the code block after ``<!-- ci:<marker> -->``, as ``.ci/run``
    reads it (the same expression)."""
    match = re.search(r"<!-- ci:%s -->\s*```\w*\n(.+?)\n```" % marker, text, re.S)
    return match.group(1).strip() if match else None


@pytest.mark.keras_free
def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) <= 160


@pytest.mark.keras_free
def test_the_readme_first_installs_the_default_set_and_builds_the_book():
    install = readme_step(README.read_text(), "install")
    assert install is not None, "README.md lost its <!-- ci:install --> block"
    assert install.startswith("pip install -r requirements.txt && ")
    assert re.findall(r"requirements[\w-]*\.txt", install) == ["requirements.txt"]
    assert "python -m helpers.book --profile smoke" in install


@pytest.mark.keras_free
def test_the_readme_then_installs_the_development_set_and_runs_the_tests():
    test = readme_step(README.read_text(), "test")
    assert test is not None, "README.md lost its <!-- ci:test --> block"
    assert test.startswith("pip install -r requirements-dev.txt && python -m pytest")
    for backend in ("jax", "torch"):
        assert f"KERAS_BACKEND={backend} python -m pytest" in test


@pytest.mark.keras_free
def test_ci_reads_the_readme_commands_with_this_expression():
    """``.ci/run`` holds the expression ``readme_step`` above copies."""
    assert r'<!-- ci:%s -->\s*```\w*\n(.+?)\n```' in (ROOT / ".ci" / "run").read_text()


# A number that reads as a measurement: followed by a unit of time, throughput or a
# share, or a speedup ("1.5×", "1.5 times"; not a size such as "32×32" or "16x16"). "A to B" and
# "A-B" ranges are read as two numbers.
NUMBER = r"\d[\d,]*(?:\.\d+)?"
UNIT = r"images/s|GFLOP/s|ms|s|seconds|min|minutes|h|hours|days|%|×|x|times"
MEASUREMENT = re.compile(
    rf"(?<![\w.])({NUMBER})(?:\s*(?:-|–|to)\s*({NUMBER}))?\s*({UNIT})(?![\w/])(?!\s*\d)")
# Which record fields a number in each unit can come from (a pattern of the field's
# path of keys), and how their values print: records hold images/s, FLOP/s,
# fractions, seconds and milliseconds.
SECONDS = (r"seconds|milliseconds", {"ms": (1, 1e3), "s": (1, 1e-3), "seconds": (1, 1e-3),
                                     "min": (1 / 60,), "minutes": (1 / 60,),
                                     "h": (1 / 3600,), "hours": (1 / 3600,),
                                     "days": (1 / 86400,)})
FIELDS = {
    "images/s": (r"images_per_second", (1,)),
    "GFLOP/s": (r"flops_per_second", (1e-9,)),
    "%": (r"fraction|shares|top[15]|acc", (100,)),
    "×": (r"speedup", (1,)),
    "x": (r"speedup", (1,)),
    "times": (r"speedup", (1,)),
    **{unit: (SECONDS[0], scales) for unit, scales in SECONDS[1].items()},
}
RECORD_FOLDERS = ("runs/bench", "runs/breakdown", "runs/cifar10-cpu/results")


def numbers_in(value, path=""):
    """``(path of keys, number)`` of every number in a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            yield path, float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from numbers_in(item, f"{path}/{key}")
    elif isinstance(value, list):
        for item in value:
            yield from numbers_in(item, path)


def recorded_values(root=ROOT):
    """``{unit: numbers}``: the numbers of the JSON records under ``RECORD_FOLDERS``
    that a number printed in that unit may come from."""
    found = [pair for folder in RECORD_FOLDERS for path in sorted((root / folder).rglob("*.json"))
             for pair in numbers_in(json.loads(path.read_text()))]
    return {unit: {value for path, value in found if re.search(pattern, path)}
            for unit, (pattern, _) in FIELDS.items()}


def prose(text):
    """``text`` without code blocks, inline code and link targets: commands and
    addresses are not measurements."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def is_recorded(number, unit, values):
    printed = float(number.replace(",", ""))
    decimals = len(number.split(".")[1]) if "." in number else 0
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(value * scale - printed) <= tolerance
               for scale in FIELDS[unit][1] for value in values[unit])


def unrecorded_measurements(text, values):
    """The measurement-like numbers of ``text``'s prose that no record holds, as printed."""
    missing = []
    for match in MEASUREMENT.finditer(prose(text)):
        unit = match.group(3)
        for number in filter(None, match.group(1, 2)):
            if not is_recorded(number, unit, values):
                missing.append(f"{number} {unit}")
    return missing


@pytest.fixture(scope="module")
def values():
    return recorded_values()


def performance_markdown():
    return "\n\n".join(c.source for c in nbformat.read(PERFORMANCE, as_version=4).cells
                       if c.cell_type == "markdown")


@pytest.mark.keras_free
@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md", "book/intro.md",
                                  "book/performance.ipynb"])
def test_every_measured_number_in_the_prose_is_in_a_record(name, values):
    text = performance_markdown() if name.endswith(".ipynb") else (ROOT / name).read_text()
    assert not unrecorded_measurements(text, values)


@pytest.mark.keras_free
def test_the_number_check_flags_a_made_up_measurement_and_passes_a_recorded_one(values):
    record = json.loads((ROOT / "runs" / "bench" / "full-tensorflow.json").read_text())
    vit = next(r for r in record["results"] if r["model"] == "vit")
    assert not any(abs(v - 987.6) < 0.05 for v in values["images/s"])  # really made up
    made_up = "On two cores the ViT trained at 987.6 images/s, 4.37× the JAX rate, in 13.3 h."
    assert unrecorded_measurements(made_up, values) == ["987.6 images/s", "4.37 ×", "13.3 h"]
    recorded = (f"The ViT trained at {vit['images_per_second']:.1f} images/s, "
                f"{vit['peak_fraction']:.0%} of the peak.")
    assert unrecorded_measurements(recorded, values) == []
    sizes = "Images of 32×32 pixels, 16x16 words, `python -m bench --steps 3 s`, 10 epochs."
    assert unrecorded_measurements(sizes, values) == []
    assert unrecorded_measurements("speedups of 1.3 to 987.6×", values) == ["987.6 ×"]  # 1.31
    assert unrecorded_measurements("2.3 to 2.5 times faster", values) == ["2.3 times", "2.5 times"]


@pytest.mark.keras_free
@pytest.mark.parametrize("name", ["results", "performance"])
def test_a_summary_page_shows_its_tables_and_sentences_not_the_code_that_writes_them(name):
    """Code a reader sees unfolded on a summary page is a few lines that show how to
    reach a record; the code that formats tables stays folded (hide-input)."""
    nb = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    shown = [c for c in nb.cells if c.cell_type == "code" and not any(
        tag.startswith(("hide-", "remove-")) for tag in c.metadata.get("tags", []))]
    long = [c.source.splitlines()[0] for c in shown if len(c.source.splitlines()) > 10]
    assert not long, f"unfolded code cells of more than 10 lines: {long}"


@pytest.mark.keras_free
def test_the_performance_page_follows_the_results_page():
    toc = [chapter["file"] for chapter in yaml.safe_load((ROOT / "_toc.yml").read_text())["chapters"]]
    assert toc.index("book/performance") == toc.index("book/results") + 1


def execute_performance(tmp_path, runs_dir=None):
    """The performance page executed like the runner does (papermill, cwd book/);
    returns the Markdown it displayed."""
    import papermill

    parameters = {} if runs_dir is None else {"runs_dir": str(runs_dir)}
    output = tmp_path / "performance.ipynb"
    papermill.execute_notebook(str(PERFORMANCE), str(output), parameters=parameters,
                               kernel_name="python3", progress_bar=False,
                               cwd=str(ROOT / "book"))
    nb = nbformat.read(output, as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]
    return "\n".join(o.data["text/markdown"] for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if "text/markdown" in o.get("data", {}))


@pytest.mark.keras_free
def test_the_performance_page_renders_every_committed_record(tmp_path):
    shown = execute_performance(tmp_path)
    for folder in ("bench", "breakdown"):
        for path in (ROOT / "runs" / folder).glob("*.json"):
            assert f"`runs/{folder}/{path.name}`" in shown, path.name
    record = json.loads((ROOT / "runs" / "bench" / "full-tensorflow.json").read_text())
    cct = next(r for r in record["results"] if r["model"] == "cct")
    assert f"| CCT | {cct['batch_size']} | {cct['images_per_second']:.0f} (" in shown
    # every precision twin of the evidence plan that has records gets its row
    from helpers.book import evidence
    from helpers.papers import TITLES

    plan = evidence.read_plan(ROOT / "evidence.yml")
    twins = evidence.precision_twins(plan)
    assert twins, "the plan checks bfloat16 against float32 for some model"
    for twin in twins:
        if evidence.read_records(ROOT / "runs" / "evidence", twin.notebook, twin.arm.name):
            assert f"| {TITLES[twin.notebook]} | " in shown, twin.notebook


@pytest.mark.keras_free
def test_a_record_with_several_dtype_policies_gets_a_speedup_table(tmp_path):
    runs = tmp_path / "runs"
    (runs / "bench").mkdir(parents=True)
    record = json.loads((ROOT / "runs" / "bench" / "full-tensorflow.json").read_text())
    record["options"]["dtype_policies"] = ["float32", "mixed_bfloat16"]
    record["matmul_peak_flops_per_second"]["bfloat16"] = (
        3 * record["matmul_peak_flops_per_second"]["float32"])
    faster = [dict(r, dtype_policy="mixed_bfloat16",
                   images_per_second=1.25 * r["images_per_second"]) for r in record["results"]]
    record["results"] = [r for pair in zip(record["results"], faster) for r in pair]
    (runs / "bench" / "full-tensorflow-bf16.json").write_text(json.dumps(record))
    shown = execute_performance(tmp_path, runs)
    peak = record["matmul_peak_flops_per_second"]["float32"]
    assert f"| a large matrix product | {peak / 1e9:.0f} GFLOP/s | 3.00× |" in shown
    # each model's rate, then the speedup, each with its fraction of its own type's peak
    assert re.search(r"\| CCT, training \| [\d.,]+ images/s \(\d+%\) \| 1\.25× \(\d+%\) \|", shown)
    assert "`mixed_bfloat16` made the matrix product 3.00 times as fast and training " \
           "1.25 times as fast" in shown
    assert "No committed benchmark record holds more than one dtype policy" not in shown


def test_a_misspelled_parameter_stops_the_performance_page(monkeypatch):
    assert_stops_before_loading_data(
        PERFORMANCE, {"run_dir": "../runs"},
        "parameter run_dir is not declared by this notebook: did you mean runs_dir",
        monkeypatch)


def book_texts():
    """(page, text) of every page source of book/: markdown files and every cell."""
    for path in sorted((ROOT / "book").glob("*.*")):
        if path.suffix == ".md":
            yield path.name, path.read_text()
        elif path.suffix == ".ipynb":
            for cell in nbformat.read(path, as_version=4).cells:
                yield path.name, cell.source


LABEL = re.compile(r"^\(([\w-]+)\)=\s*$", re.M)
REF = re.compile(r"\{ref\}`(?:[^`<]*<([\w-]+)>|([\w-]+))`")


@pytest.mark.keras_free
def test_every_ref_of_the_book_has_its_label():
    labels = {label for _, text in book_texts() for label in LABEL.findall(text)}
    used = {(page, a or b) for page, text in book_texts() for a, b in REF.findall(text)}
    assert {"parameters", "smoke-builds", "step-time"} <= {label for _, label in used}
    assert not sorted((page, label) for page, label in used if label not in labels)


def tries_result(model, mode, rate, spread=1.0, round_=0):
    return {"round": round_, "model": model, "mode": mode, "images_per_second": rate,
            "images_per_second_min": rate - spread, "images_per_second_max": rate + spread}


@pytest.mark.keras_free
def test_the_per_layer_precision_record_gets_a_table_and_a_spread_aware_reading(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(ROOT / "runs" / "bench", runs / "bench")
    modes = ["float32", "mixed_bfloat16", "normalization-float32", "products-bfloat16"]
    rates = {"vit": [200.0, 250.0, 280.0, 249.0], "cct": [100.0, 150.0, 149.5, 120.0]}
    record = {"runtime": {"backend": "tensorflow", "backend_version": "2.21.0",
                          "keras_version": "3.15.1"},
              "machine": {"cpu": "Some Xeon", "cores": 2, "memory_gib": 24},
              "date": "2026-12-06T08:00:00+00:00", "profile": "cifar10-cpu", "steps": 8,
              "rounds": 2, "modes": modes,
              "results": [tries_result(m, mode, r, round_=k) for k in (0, 1)
                          for m, rs in rates.items() for mode, r in zip(modes, rs)]
              + [tries_result("perceiver", mode, 90.0) for mode in modes[:3]]
              + [{"round": 0, "model": "perceiver", "mode": modes[3],
                  "error": "Input 'y' of 'AddV2' Op has type bfloat16"}]}
    (runs / "bench" / "precision-tries" / "results.json").write_text(json.dumps(record))
    shown = execute_performance(tmp_path, runs)
    assert "| mode | ViT | Perceiver | CCT |" in shown
    assert "| `float32`, images/s | 200 | 90.0 | 100 |" in shown
    assert "| `normalization-float32` over `float32` | 1.40× | 1.00× | 1.50× |" in shown
    # ViT 280 against 250 (epochs 279-281 and 249-251): faster; CCT 149.5 against 150 overlaps
    assert ("`normalization-float32` trained 1.00 to 1.12 times as fast as `mixed_bfloat16`: "
            "faster beyond the epochs' spread for ViT, slower for none.") in shown
    assert "faster beyond the epochs' spread for no model, slower for CCT." in shown
    assert "Some Xeon, 2 cores, 24 GiB; TensorFlow 2.21.0" in shown and "2 rounds." in shown
    # a mode a model cannot run as is: said, not timed
    assert "| `products-bfloat16` over `float32` | 1.25× | does not run as is | 1.20× |" in shown
    assert ("The Perceiver does not run `products-bfloat16` as is: a layer's output meets a "
            "tensor of the other type in the model's own code (\"Input 'y' of 'AddV2' Op has "
            "type bfloat16\")") in shown
    # one round cannot tell a mode's speed from the machine's drift: nothing is called
    record["rounds"], record["results"] = 1, [r for r in record["results"] if r["round"] == 0]
    (runs / "bench" / "precision-tries" / "results.json").write_text(json.dumps(record))
    shown = execute_performance(tmp_path, runs)
    assert ("`normalization-float32` trained 1.00 to 1.12 times as fast as `mixed_bfloat16` "
            "in one round: too few to call it faster or slower") in shown
    assert "beyond the epochs' spread" not in shown


def test_the_per_layer_tries_give_the_chosen_layers_their_own_policy():
    import importlib.util

    import keras

    path = ROOT / "runs" / "bench" / "precision-tries" / "tries.py"
    spec = importlib.util.spec_from_file_location("precision_tries", path)
    tries = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tries)
    with tries.made_with(tries.PRODUCTS, "mixed_bfloat16"):
        dense, norm = keras.layers.Dense(4), keras.layers.LayerNormalization()
        attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    assert dense.compute_dtype == "bfloat16" and dense.variable_dtype == "float32"
    assert norm.compute_dtype == keras.config.dtype_policy().compute_dtype
    assert attention.compute_dtype == "bfloat16"
    assert keras.layers.Dense(4).compute_dtype == keras.config.dtype_policy().compute_dtype
    out = attention(keras.ops.ones((1, 3, 8)), keras.ops.ones((1, 3, 8)))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
