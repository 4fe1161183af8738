"""The models rebuilt from parameters (helpers.models), their FLOPs (helpers.book.flops)
and the benchmark (helpers.book.bench)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import models
from helpers.book.flops import models_flops

from conftest import ROOT


def test_the_defaults_are_read_from_each_notebooks_parameters_cell():
    vit = models.notebook_defaults("vit")
    assert (vit["image_size"], vit["patch_size"], vit["mlp_head_units"]) == (72, 6, [2048, 1024])
    assert models.notebook_defaults("perceiver")["num_latents"] == 256
    assert models.notebook_defaults("shiftvit")["num_shift_blocks_per_stages"] == [2, 4, 8, 2]
    smoke = models.profile_parameters("cct", "smoke")
    assert (smoke["dataset"], smoke["epochs"], smoke["conv_channels"]) == ("digits", 10, 16)
    assert smoke["num_heads"] == models.notebook_defaults("cct")["num_heads"]  # kept default
    with pytest.raises(ValueError, match="model must be one of vit, spt_lsa"):
        models.notebook_defaults("resnet")
    with pytest.raises(ValueError, match="profile must be one of"):
        models.profile_parameters("vit", "fast")


def test_the_full_size_models_have_their_notebooks_sizes():
    """The counts of the notebooks' defaults (tests of each notebook check them too)."""
    expected = {"vit": 21_759_019, "perceiver": 9_763_947, "shiftvit": 11_690_602}
    for name, count in expected.items():
        model = models.build_model(name, models.notebook_defaults(name))
        assert model.count_params() == count, name
    cct = models.build_model("cct", models.notebook_defaults("cct"))
    assert 380_000 < cct.count_params() < 420_000


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
    p = models.profile_parameters("vit", "smoke")
    n, d, h = (p["image_size"] // p["patch_size"]) ** 2, p["projection_dim"], p["num_heads"]
    patch = p["patch_size"] ** 2 * 3
    layer = (3 * 2 * n * d * h * d + 2 * n * h * d * d    # q, k, v and output projections
             + 2 * 2 * h * n * n * d                      # scores and weighted values
             + 2 * 2 * n * d * 2 * d)                     # the block's MLP, d -> 2d -> d
    head = 2 * n * d * p["mlp_head_units"][0] + 2 * p["mlp_head_units"][0] * 10
    matmuls = 2 * n * patch * d + p["transformer_layers"] * layer + head
    (flops,) = models_flops([{"name": "vit", "parameters": p}])
    assert matmuls < flops < 1.3 * matmuls, (flops, matmuls)


def run_bench(tmp_path, *args):
    command = [sys.executable, "-m", "helpers.book.bench", *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)


def test_the_benchmark_prints_a_table_and_writes_its_json(tmp_path):
    output = tmp_path / "bench.json"
    done = run_bench(tmp_path, "--profile", "smoke", "--models", "vit", "cct", "--steps", "2",
                     "--repeats", "2", "--batch-size", "8", "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["runtime"]["backend"] == os.environ["KERAS_BACKEND"]
    assert report["options"]["profile"] == "smoke" and report["options"]["repeats"] == 2
    assert [r["model"] for r in report["results"]] == ["vit", "cct"]
    for result in report["results"]:
        model = models.build_model(result["model"], report["parameters"][result["model"]])
        assert result["parameter_count"] == model.count_params()
        assert result["flops_per_image"] > result["parameter_count"]
        assert len(result["epoch_seconds"]) == 3  # one warm-up, two timed
        assert result["images_per_second_min"] <= result["images_per_second"] > 0
        assert result["batch_size"] == 8
        assert f"{result['model']:<10} {result['parameter_count']:>11,}" in done.stdout


def test_the_benchmark_rejects_bad_options(tmp_path):
    done = run_bench(tmp_path, "--steps", "0")
    assert done.returncode == 2 and "--steps: must be > 0, got 0" in done.stderr
    done = run_bench(tmp_path, "--dtype-policy", "float8")
    assert done.returncode == 2 and "invalid choice: 'float8'" in done.stderr
    done = run_bench(tmp_path, "--profile", "fast", "--no-flops")
    assert done.returncode == 2 and "profile must be one of" in done.stderr
