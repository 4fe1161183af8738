"""The papers' builders (``helpers.papers``), and what builds models through them:
the benchmark (``helpers.book.bench``), the FLOP counter (``helpers.book.flops``)
and the results page.

Each paper has one builder, ``build_<name>``, defined in its notebook and
exported to ``helpers/papers/<name>.py``; everything else calls it through
``helpers.papers.build``.
"""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap

import nbformat
import numpy as np
import pytest

from helpers import papers
from helpers.book import bench, flops
from helpers.book.runner import profile_parameters
from helpers.harness.parameters import Parameters
from helpers.harness.train import PerStepAdamW
from helpers.papers import MODELS

from conftest import ROOT, start_cell_namespace


def parameters_cell_values(notebook) -> dict:
    """``{name: value}`` of the parameters cell of a committed notebook, in order."""
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {node.target.id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
            if isinstance(node, ast.AnnAssign) and node.value is not None}


def test_the_defaults_are_each_notebooks_parameters_cell():
    """The generated ``DEFAULTS`` have not drifted from the notebooks they come from."""
    for name in MODELS:
        cell = parameters_cell_values(ROOT / "book" / f"{name}.ipynb")
        defaults = papers.defaults(name)
        assert list(defaults) == list(cell), f"{name}: run python -m helpers.book.export"
        assert dict(defaults) == cell, f"{name}: run python -m helpers.book.export"
        assert isinstance(defaults, Parameters)
        assert defaults.dataset == cell["dataset"]  # reads as attributes too


def test_the_defaults_are_a_copy_and_the_profiles_go_on_top():
    defaults = papers.defaults("vit")
    defaults["mlp_head_units"].append(1)
    assert papers.defaults("vit")["mlp_head_units"] == parameters_cell_values(
        ROOT / "book" / "vit.ipynb")["mlp_head_units"]
    smoke = profile_parameters("cct", "smoke")
    assert (smoke["dataset"], smoke["epochs"], smoke["conv_channels"]) == ("digits", 10, 16)
    assert smoke["num_heads"] == papers.defaults("cct")["num_heads"]  # kept default
    with pytest.raises(ValueError, match="profile must be one of"):
        profile_parameters("vit", "fast")


class Spy:
    """Stands in for a builder: records its calls, then calls ``then`` (or returns None)."""

    def __init__(self, then=None):
        self.calls, self.then = [], then

    def __call__(self, p, x_train, num_classes, **options):
        self.calls.append((p, x_train, num_classes, options))
        return self.then(p, x_train, num_classes, **options) if self.then else None


@pytest.fixture
def spy_vit(monkeypatch):
    """``helpers.papers.vit.build_vit`` wrapped: the real builder, its calls recorded."""
    import helpers.papers.vit

    spy = Spy(then=helpers.papers.vit.build_vit)
    monkeypatch.setattr(helpers.papers.vit, "build_vit", spy)
    return spy


def test_build_completes_partial_parameters_with_the_notebooks_defaults(monkeypatch):
    import helpers.papers.vit

    spy = Spy()
    monkeypatch.setattr(helpers.papers.vit, "build_vit", spy)
    assert papers.builder("vit") is spy
    papers.build("vit", {"patch_size": 4})
    ((p, x_train, num_classes, _),) = spy.calls
    assert isinstance(p, Parameters) and p.patch_size == 4
    assert p == {**papers.defaults("vit"), "patch_size": 4}
    # no images given: random uint8 images and the class count of p's dataset (CIFAR-100)
    assert x_train.dtype == np.uint8 and x_train.shape[1:] == (32, 32, 3)
    assert num_classes == 100

    images = np.zeros((2, 16, 16, 3), "uint8")
    papers.build("vit", None, images, 5)
    assert spy.calls[1][0] == papers.defaults("vit")
    assert spy.calls[1][1] is images and spy.calls[1][2] == 5
    papers.build("vit", {"dataset": "digits"}, images)
    assert spy.calls[2][2] == 10


def test_unknown_papers_are_rejected():
    message = "model must be one of vit, spt_lsa, perceiver, cct, shiftvit, got 'resnet'"
    for call in (papers.build, papers.defaults, papers.builder, papers.optimizer):
        with pytest.raises(ValueError, match=message):
            call("resnet")


def test_each_paper_trains_with_its_notebooks_optimizer():
    import keras

    for name in MODELS:
        module = papers._module(name)
        p = papers.defaults(name)
        optimizer = papers.optimizer(name)
        if hasattr(module, "optimizer_factory"):
            assert type(optimizer) is type(module.optimizer_factory(p)(p.learning_rate))
        elif p.get("weight_decay_mode", "lr_scaled") == "per_step":
            assert isinstance(optimizer, PerStepAdamW)
            assert optimizer.per_step_decay == pytest.approx(p.weight_decay)
        else:
            assert isinstance(optimizer, keras.optimizers.AdamW)
            assert optimizer.weight_decay == pytest.approx(p.weight_decay)
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(
            p.learning_rate)
    faster = papers.optimizer("vit", {"learning_rate": 0.01})
    assert float(keras.ops.convert_to_numpy(faster.learning_rate)) == pytest.approx(0.01)


# The weight decay per step each source example trained with: TF Addons' AdamW shrinks every
# weight by weight_decay = 1e-4 of itself per step (ViT, SPT+LSA, ShiftViT); CCT's source used
# Keras's AdamW, whose decay is scaled by the learning rate: 1e-3 * 1e-4 per step.
SOURCE_DECAY_PER_STEP = {"vit": 1e-4, "spt_lsa": 1e-4, "shiftvit": 1e-4, "cct": 1e-3 * 1e-4}


@pytest.mark.parametrize("name", sorted(SOURCE_DECAY_PER_STEP))
def test_the_defaults_decay_each_weight_per_step_as_the_source_did(name):
    import keras

    optimizer = papers.optimizer(name)
    if isinstance(optimizer, PerStepAdamW):
        # One step with a zero gradient (Adam's update is 0): only the decay moves the weight.
        weight = keras.Variable(np.full((4,), 3.0, dtype="float32"))
        optimizer.apply_gradients([(keras.ops.zeros((4,)), weight)])
        decayed = keras.ops.convert_to_numpy(weight)
        np.testing.assert_allclose(decayed, 3.0 * (1 - SOURCE_DECAY_PER_STEP[name]), rtol=1e-6)
    else:
        # A 1e-7 step is below float32's resolution: check Keras AdamW's own product instead
        # (its per-step decay, learning rate x weight_decay, is tested in test_train.py).
        assert type(optimizer).__name__ == "AdamW" and isinstance(optimizer, keras.optimizers.AdamW)
        rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        assert rate * optimizer.weight_decay == pytest.approx(SOURCE_DECAY_PER_STEP[name])


# The static checks: one builder per paper, defined in its notebook, called by its
# notebook's model cell; nothing else defines one or calls the builders they replaced.
OLD_BUILDER = re.compile(r"create" + r"_\w+_classifier")
BUILDER_DEFINITION = re.compile(
    r"def\s+(build_(?:%s)|build_model|%s)\s*\(" % ("|".join(MODELS), OLD_BUILDER.pattern))


def saved_and_other_code(name):
    cells = [c.source for c in nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4).cells
             if c.cell_type == "code"]
    saved = [s for s in cells if s.startswith("# @save")]
    return saved, [s for s in cells if not s.startswith("# @save")]


@pytest.mark.parametrize("name", MODELS)
def test_each_notebooks_model_cell_calls_its_own_builder(name):
    saved, other = saved_and_other_code(name)
    definitions = [node.name for source in saved for node in ast.parse(source).body
                   if isinstance(node, ast.FunctionDef)]
    assert definitions.count(f"build_{name}") == 1
    assert [s for s in other if f"build_{name}(run.p, data.x_train, data.num_classes" in s]
    module = (ROOT / "helpers" / "papers" / f"{name}.py").read_text()
    builders = [node.name for node in ast.parse(module).body if isinstance(node, ast.FunctionDef)
                and (node.name.startswith("build_") or OLD_BUILDER.fullmatch(node.name))]
    assert builders == [f"build_{name}"]
    assert papers.builder(name).__name__ == f"build_{name}"


def test_no_other_file_defines_a_builder_or_calls_the_old_ones():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    own = {f"book/{name}.ipynb" for name in MODELS} | {f"helpers/papers/{name}.py"
                                                       for name in MODELS}
    offending = []
    for path in listed:
        # runs/ holds executed copies of the notebooks (helpers.book.publish)
        if path in own or path.startswith(("vendor/", "runs/")) or not (ROOT / path).is_file():
            continue
        if not path.endswith((".py", ".ipynb", ".md", ".yml", ".toml", ".txt")):
            continue
        text = (ROOT / path).read_text(errors="replace")
        offending += [f"{path}: {m.group(0)}" for m in BUILDER_DEFINITION.finditer(text)]
        offending += [f"{path}: {m.group(0)}" for m in OLD_BUILDER.finditer(text)]
    assert not offending


# What builds models through the builders.
@pytest.mark.slow  # trains: 27 s on JAX, 6 s on TensorFlow
def test_the_benchmark_times_the_model_the_papers_builder_makes(spy_vit):
    tiny = {**profile_parameters("vit", "smoke"), "transformer_layers": 1, "mlp_head_units": [8]}
    result = bench.bench_model("vit", tiny, batch_size=8, steps=1, warmup=1, repeats=1,
                               jit_compile=False)
    ((p, x_train, num_classes, _),) = spy_vit.calls
    assert p == tiny and x_train.dtype == np.uint8 and num_classes == 10
    assert result["parameter_count"] == papers.build("vit", tiny).count_params()
    assert len(result["epoch_seconds"]) == 2 and result["images_per_second"] > 0


def test_the_flop_counter_counts_the_model_the_papers_builder_makes(spy_vit, monkeypatch):
    """``_count_specs``, what the JAX child process runs; XLA's count itself is faked
    (on JAX it needs no child: ``models_flops`` calls ``_count_specs`` directly)."""
    counted = []
    monkeypatch.setattr(flops, "count_flops",
                        lambda model, shape: counted.append((model, shape)) or 1000 + len(counted))
    smoke = profile_parameters("vit", "smoke")
    specs = [{"name": "vit", "parameters": smoke},
             {"name": "vit", "parameters": {**smoke, "dataset": "mine.npz"},
              "input_shape": [16, 16, 3], "num_classes": 4}]
    assert flops._count_specs(specs) == [1001, 1002]
    (p, x_train, num_classes, _), (_, x_other, classes_other, _) = spy_vit.calls
    assert p == smoke and x_train.shape[1:] == (32, 32, 3) and num_classes == 10
    assert x_other.shape[1:] == (16, 16, 3) and classes_other == 4
    assert [shape for _, shape in counted] == [(32, 32, 3), (16, 16, 3)]
    assert counted[0][0].count_params() == papers.build("vit", smoke).count_params()


def write_vit_record(folder, parameters):
    from helpers.harness.data import Dataset
    from helpers.harness.records import write_record
    from helpers.harness.train import TrainResult

    x = np.zeros((20, 32, 32, 3), np.uint8)
    y = np.arange(20, dtype=np.int32) % 10
    data = Dataset("digits", x, y, x[:10], y[:10], [str(i) for i in range(10)])
    result = TrainResult(
        history={"loss": [2.0, 1.0], "accuracy": [0.3, 0.6]}, test_loss=1.1, test_top1=0.55,
        test_top5=0.82, epochs=2, best_epoch=2, parameter_count=123_456, train_seconds=10.0,
        train_images_per_second=500.0, epoch_seconds=[6.0, 4.0])
    return write_record(folder, "vit", result, data=data, parameters=parameters)


def run_results_page(folder, monkeypatch):
    """The results page's cells, in this process, on ``folder`` (records); returns
    the namespace and the objects the page displayed."""
    import IPython.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **_: shown.extend(objects))
    notebook = ROOT / "book" / "results.ipynb"
    namespace = start_cell_namespace(notebook, {"results_dir": str(folder), "profile": "smoke"})
    cells = [c.source for c in nbformat.read(notebook, as_version=4).cells
             if c.cell_type == "code"]
    later = cells[next(i for i, s in enumerate(cells) if "start(globals()" in s) + 1:]
    try:
        for index, source in enumerate(later):
            exec(compile(source, f"results.ipynb:{index}", "exec"), namespace)
    finally:
        plt.close("all")
    return namespace, shown


def results_table(shown) -> str:
    return next(o.data for o in shown if "single-runs" in getattr(o, "data", ""))


def test_the_results_page_counts_the_flops_of_the_model_the_papers_builder_makes(
        tmp_path, spy_vit, monkeypatch):
    """The FLOP count runs ``_count_specs`` here instead of in a JAX child, with
    XLA's count faked."""
    smoke = {**profile_parameters("vit", "smoke"), "results_dir": str(tmp_path)}
    write_vit_record(tmp_path, smoke)
    monkeypatch.setattr(flops, "models_flops", flops._count_specs)
    monkeypatch.setattr(flops, "count_flops", lambda model, shape: 7_654_321)
    namespace, shown = run_results_page(tmp_path, monkeypatch)

    ((p, x_train, num_classes, _),) = spy_vit.calls
    assert p == smoke and x_train.shape[1:] == (32, 32, 3) and num_classes == 10
    assert namespace["flops"] == {"vit": 7_654_321}
    table = results_table(shown)
    assert "<td>123,456</td>" in table and "<td>7.7</td>" in table  # parameters, MFLOPs
    assert "<td>55.00%</td>" in table and "<td>82.00%</td>" in table
    assert any("fewest FLOPs per image (7.7 M)" in getattr(o, "data", "") for o in shown)


def test_without_jax_the_results_page_says_so_and_leaves_the_flops_empty(tmp_path, monkeypatch):
    """The default install set has no JAX: the page still builds, without FLOPs."""
    write_vit_record(tmp_path, {**profile_parameters("vit", "smoke"), "results_dir": str(tmp_path)})
    monkeypatch.setattr(flops, "jax_installed", lambda: False)
    monkeypatch.setattr(flops, "models_flops", lambda specs: pytest.fail("counted FLOPs"))
    namespace, shown = run_results_page(tmp_path, monkeypatch)
    assert namespace["flops"] == {}
    assert any("requirements-jax.txt" in getattr(o, "data", "") for o in shown)
    table = results_table(shown)
    assert "<td>123,456</td>" in table and "<td>–</td>" in table
    assert not any("fewest FLOPs" in getattr(o, "data", "") for o in shown)


def test_jax_installed_says_whether_jax_can_be_imported(monkeypatch):
    import importlib.util

    assert flops.jax_installed() == (importlib.util.find_spec("jax") is not None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert not flops.jax_installed()


# XLA's count (needs the JAX backend: in a child process when the tests run on another).
@pytest.mark.slow
def test_xla_counts_two_flops_per_multiply_add_of_dense_and_convolution_layers():
    script = textwrap.dedent("""
        import keras
        from helpers.book.flops import count_flops
        model = keras.Sequential([
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="valid", use_bias=False),  # 6x6x4 outputs, 27 MACs each
            keras.layers.Flatten(),
            keras.layers.Dense(10, use_bias=False),                      # 144 x 10 MACs
        ])
        print(count_flops(model, (8, 8, 3)))
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True)
    assert int(done.stdout.split()[-1]) == 2 * (6 * 6 * 4 * 27) + 2 * (144 * 10)


def test_the_vits_flops_are_its_matrix_products_plus_a_little_elementwise_work():
    """From any backend (a JAX child process where Keras runs on another one)."""
    p = profile_parameters("vit", "smoke")
    n, d, h = (p["image_size"] // p["patch_size"]) ** 2, p["projection_dim"], p["num_heads"]
    patch = p["patch_size"] ** 2 * 3
    layer = (3 * 2 * n * d * h * d + 2 * n * h * d * d    # q, k, v and output projections
             + 2 * 2 * h * n * n * d                      # scores and weighted values
             + 2 * 2 * n * d * 2 * d)                     # the block's MLP, d -> 2d -> d
    head = 2 * n * d * p["mlp_head_units"][0] + 2 * p["mlp_head_units"][0] * 10
    matmuls = 2 * n * patch * d + p["transformer_layers"] * layer + head
    (count,) = flops.models_flops([{"name": "vit", "parameters": p}])
    assert matmuls < count < 1.3 * matmuls, (count, matmuls)


# The benchmark's command line.
def run_bench(tmp_path, *args):
    command = [sys.executable, "-m", "helpers.book.bench", *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)


@pytest.mark.slow
def test_the_benchmark_prints_a_table_and_writes_its_json(tmp_path):
    output = tmp_path / "bench.json"
    done = run_bench(tmp_path, "--profile", "smoke", "--models", "cct", "--steps", "2",
                     "--repeats", "2", "--batch-size", "8", "--output", str(output),
                     "--dtype-policy", "float32", "mixed_bfloat16")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["runtime"]["backend"] == os.environ["KERAS_BACKEND"]
    assert report["options"]["profile"] == "smoke" and report["options"]["repeats"] == 2
    # Where and when: the records the book quotes name their machine and date.
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert report["date"].startswith("20")
    assert report["options"]["dtype_policies"] == ["float32", "mixed_bfloat16"]
    # The model under each policy, in the order named; the speedup is over the first.
    # (One model: each policy is one more build and compilation. The ordering of
    # several models' rows is tested on hand-made results below.)
    assert [(r["model"], r["dtype_policy"]) for r in report["results"]] == [
        ("cct", "float32"), ("cct", "mixed_bfloat16")]
    for first, second in zip(report["results"][::2], report["results"][1::2]):
        assert first["speedup"] == 1.0
        assert second["speedup"] == pytest.approx(
            second["images_per_second"] / first["images_per_second"])
        assert second["parameter_count"] == first["parameter_count"]
    peaks = report["matmul_peak_flops_per_second"]
    assert set(peaks) == {"float32", "bfloat16"}
    for result in report["results"]:
        model = papers.build(result["model"], report["parameters"][result["model"]])
        assert result["parameter_count"] == model.count_params()
        assert result["flops_per_image"] > result["parameter_count"]
        assert len(result["epoch_seconds"]) == 3  # one warm-up, two timed
        assert result["images_per_second_min"] <= result["images_per_second"] > 0
        assert result["batch_size"] == 8
        assert f"{result['model']:<10} {result['parameter_count']:>11,}" in done.stdout
        # Achieved FLOP/s: three forward passes' worth per image, against the measured peak.
        peak = peaks["bfloat16" if result["dtype_policy"] == "mixed_bfloat16" else "float32"]
        assert result["achieved_flops_per_second"] == pytest.approx(
            3 * result["flops_per_image"] * result["images_per_second"])
        assert result["peak_fraction"] == pytest.approx(result["achieved_flops_per_second"] / peak)
        assert 0 < result["peak_fraction"] < 1.5
        assert 0 < result["compiled_step_milliseconds"]
        assert 0 <= result["outside_step_fraction"] < 1
    assert "matmul peak: float32" in done.stdout and "of peak" in done.stdout


@pytest.mark.keras_free
def test_the_speedup_of_each_policy_is_over_the_first_one_timed_for_its_model():
    results = [{"model": "vit", "images_per_second": 50.0}, {"model": "vit", "images_per_second": 80.0},
               {"model": "cct", "images_per_second": 300.0}, {"model": "cct", "images_per_second": 240.0}]
    bench.add_speedups(results)
    assert [r["speedup"] for r in results] == [1.0, 1.6, 1.0, 0.8]


@pytest.mark.keras_free
def test_the_benchmark_table_names_each_rows_policy_and_speedup():
    row = {"model": "cct", "parameter_count": 416331, "batch_size": 128, "dtype_policy": "mixed_bfloat16",
           "images_per_second": 240.0, "images_per_second_min": 230.0, "images_per_second_max": 250.0,
           "speedup": 0.8, "step_milliseconds": 533.3, "outside_step_fraction": 0.05,
           "peak_memory_bytes": None}
    header, rule, line = bench.format_table([row, {**row, "devices": 2}]).splitlines()[:3]
    assert header.split() == ["model", "parameters", "GFLOPs/img", "batch", "policy", "devices",
                              "images/s", "(min-max)", "speedup", "ms/step", "GFLOP/s", "of",
                              "peak", "peak", "of", "outside", "peak", "MiB"]
    assert line.split() == ["cct", "416,331", "-", "128", "mixed_bfloat16", "1", "240.0",
                            "230-250", "0.80x", "533.3", "-", "-", "-", "5%", "-"]
    measured = {**row, "flops_per_image": 2e8, "achieved_flops_per_second": 1.44e11,
                "peak_fraction": 0.12, "peak_dtype": "bfloat16"}
    assert bench.format_table([measured]).splitlines()[2].split()[10:13] == [
        "144.0", "12%", "bfloat16"]
    assert bench.format_table([row, {**row, "devices": 2}]).splitlines()[3].split()[5] == "2"
    assert len(rule) == len(header)


def test_the_benchmark_offers_the_feeds_of_the_training_loop():
    from helpers.harness.feed import FEEDS

    assert bench.FEEDS == FEEDS


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_matmul_peak_is_2n3_flops_over_the_fastest_timed_product(monkeypatch, dtype):
    # A clock under the test's control: every product "takes" 0.25 s but the third,
    # which takes 0.125 s. The peak is 2 n^3 over the fastest, not the mean.
    durations = iter([0.25, 0.25, 0.125, 0.25])
    now = [0.0]
    calls = [0]

    def clock():
        calls[0] += 1
        if calls[0] % 2 == 0:  # the end of a timed product
            now[0] += next(durations)
        return now[0]

    monkeypatch.setattr(bench.time, "perf_counter", clock)
    assert bench.matmul_peak(dtype, size=64, repeats=4) == pytest.approx(2 * 64**3 / 0.125)


def test_the_benchmark_rejects_bad_options(tmp_path):
    done = run_bench(tmp_path, "--steps", "0")
    assert done.returncode == 2 and "--steps: must be > 0, got 0" in done.stderr
    done = run_bench(tmp_path, "--dtype-policy", "float8")
    assert done.returncode == 2 and "invalid choice: 'float8'" in done.stderr
    done = run_bench(tmp_path, "--profile", "fast", "--no-flops")
    assert done.returncode == 2 and "profile must be one of" in done.stderr
    done = run_bench(tmp_path, "--cpu-devices", "0")
    assert done.returncode == 2 and "--cpu-devices: must be > 0, got 0" in done.stderr
    done = run_bench(tmp_path, "--data-parallel", "sometimes")
    assert done.returncode == 2 and "invalid choice: 'sometimes'" in done.stderr
    for option in (["--data-parallel", "on"], ["--cpu-devices", "2"]):
        done = run_bench(tmp_path, "--backend", "torch", *option)
        assert done.returncode == 2
        assert "no single-process data-parallel training on PyTorch" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ["KERAS_BACKEND"] == "torch",
                    reason="data-parallel training runs on JAX and TensorFlow")
def test_the_benchmark_times_each_model_on_one_device_then_on_every_cpu_device(tmp_path):
    # Two models, each data-parallel in turn: on TensorFlow a second strategy in one
    # process used to stop the second model's first step.
    output = tmp_path / "bench.json"
    done = run_bench(tmp_path, "--profile", "smoke", "--models", "cct", "vit", "--steps", "2",
                     "--repeats", "1", "--batch-size", "8", "--output", str(output),
                     "--no-flops", "--cpu-devices", "2", "--data-parallel", "off", "on")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["options"]["data_parallel"] == ["off", "on"]
    assert report["options"]["cpu_devices"] == 2
    assert [r["model"] for r in report["results"]] == ["cct", "cct", "vit", "vit"]
    for off, on in zip(report["results"][::2], report["results"][1::2]):
        assert (off["data_parallel"], off["devices"]) == (False, 1)
        assert (on["data_parallel"], on["devices"]) == (True, 2)
        assert off["speedup"] == 1.0
        assert on["speedup"] == pytest.approx(on["images_per_second"] / off["images_per_second"])
        assert on["parameter_count"] == off["parameter_count"] and on["feed"] == "arrays"
        assert on["images_per_second"] > 0
    assert "data-parallel off then on" in done.stdout
