"""The GPU script (helpers.book.epoch_bench): one epoch of every recipe, per backend and
precision, in one JSON, within a time budget. Checked here at smoke size on the CPU."""

import json
import math
import subprocess
import sys

import pytest

from helpers.book import epoch_bench
from helpers.book.runner import profile_parameters


@pytest.mark.keras_free
def test_an_epoch_is_the_training_images_after_the_validation_split_over_the_batch():
    # The full ShiftViT recipe: 50,000 CIFAR-10 images, 20% held out, batch 256.
    p = profile_parameters("shiftvit", "full")
    assert epoch_bench.epoch_steps(p) == math.ceil(40_000 / 256) == 157
    # A subset counts instead of the whole set, and a partial last batch is a step.
    assert epoch_bench.epoch_steps({"dataset": "cifar10", "n_train": 1000,
                                    "validation_split": 0.1, "batch_size": 64}) == 15


@pytest.mark.keras_free
def test_the_report_lists_what_a_stopped_worker_did_not_reach():
    timing = {"batch_size": 256, "step_milliseconds": 10.0, "epoch_steps": 176,
              "epoch_seconds": 1.76}
    lines = [
        {"backend": "jax", "kind": "runtime", "runtime": {"backend": "jax"},
         "matmul_peak_flops_per_second": {"float32": 1e12, "bfloat16": 4e12}},
        {"backend": "jax", "kind": "result", "model": "vit", "dtype_policy": "float32",
         "images_per_second": 100.0, **timing},
        {"backend": "jax", "kind": "result", "model": "vit", "dtype_policy": "mixed_bfloat16",
         "images_per_second": 250.0, **timing},
        {"backend": "jax", "kind": "failed", "model": "cct", "dtype_policy": "float32",
         "error": "ValueError: boom"},
    ]
    options = {"models": ["vit", "cct"], "policies": ["float32", "mixed_bfloat16"]}
    report = epoch_bench.merge(lines, options=options, backends=["jax", "torch"],
                               stopped={"jax": "stopped at the end of its 100 s share"})
    jax = report["backends"]["jax"]
    assert [r["speedup"] for r in jax["results"]] == [1.0, 2.5]
    assert jax["failed"][0]["error"] == "ValueError: boom"
    assert [(s["model"], s["dtype_policy"], s["reason"]) for s in jax["skipped"]] == [
        ("cct", "mixed_bfloat16", "stopped at the end of its 100 s share")]
    # A backend that wrote nothing has every measurement missing, and no runtime.
    torch = report["backends"]["torch"]
    assert torch["runtime"] is None and len(torch["skipped"]) == 4
    assert "not timed: ValueError: boom" in epoch_bench.format_table(report)


@pytest.mark.keras_free
def test_the_script_refuses_bad_options():
    for args, message in ((["--steps", "0"], "--steps must be at least 1"),
                          (["--budget", "-5"], "--budget must be positive"),
                          (["--policies", "float8"], "invalid choice: 'float8'")):
        done = subprocess.run([sys.executable, "-m", "helpers.book.epoch_bench", *args],
                              capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.slow
def test_the_script_times_each_model_in_both_precisions_within_its_budget(tmp_path):
    import os

    backend = os.environ["KERAS_BACKEND"]
    output = tmp_path / "epochs.json"
    done = subprocess.run(
        [sys.executable, "-m", "helpers.book.epoch_bench", "--backends", backend,
         "--profile", "smoke", "--models", "cct", "shiftvit", "--steps", "2",
         "--repeats", "1", "--budget", "240", "--output", str(output)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    entry = report["backends"][backend]
    assert entry["runtime"]["backend"] == backend
    assert set(entry["matmul_peak_flops_per_second"]) == {"float32", "bfloat16"}
    timed = {(r["model"], r["dtype_policy"]) for r in entry["results"]}
    assert timed == {(m, p) for m in ("cct", "shiftvit") for p in ("float32", "mixed_bfloat16")}
    for r in entry["results"]:
        steps = epoch_bench.epoch_steps(profile_parameters(r["model"], "smoke"))
        assert r["epoch_steps"] == steps
        assert r["epoch_seconds"] == pytest.approx(steps * r["step_milliseconds"] / 1000)
        assert r["images_per_second"] > 0
    assert not entry["failed"] and not entry["skipped"] and entry["stopped"] is None
    assert report["options"]["wall_seconds"] < 240
    assert report["machine"]["cores"] >= 1 and report["date"].startswith("20")
    assert not output.with_suffix(".lines").exists()


@pytest.mark.keras_free
def test_the_worker_needs_no_jupyter_package_nor_tensorflow():
    """A lent GPU machine has JAX and PyTorch but no TensorFlow and none of the notebook
    tools: the worker's imports and a model build must not reach for them."""
    blocked = ["nbformat", "papermill", "nbclient", "IPython", "ipywidgets", "jupyter_book",
               "tensorflow"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # an import of it now raises ImportError\n"
        "import os\n"
        "os.environ['KERAS_BACKEND'] = 'jax'\n"
        "from helpers.book import bench, epoch_bench\n"
        "from helpers.book.runner import profile_parameters\n"
        "from helpers.harness.records import runtime\n"
        "model, x, y = bench.compiled_model('cct', profile_parameters('cct', 'smoke'), images=8)\n"
        "print(runtime()['backend'], bench.provenance()['machine']['cores'], model.count_params())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[0] == "jax"
