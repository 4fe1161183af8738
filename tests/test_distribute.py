"""Data-parallel training on two virtual CPU devices matches single-device training.

Each run is a subprocess: the number of CPU devices is fixed when JAX or
TensorFlow starts (XLA_FLAGS for JAX, logical devices for TensorFlow). Those
runs are slow; the checks without training (the PyTorch refusal, a disabled
block) are quick, so they run in every backend's quick session, the PyTorch
refusal in the PyTorch one.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from helpers.book.runner import cpu_device_flags
from helpers.harness.distribute import data_parallel, use_data_parallel

# Two virtual CPU devices, with XLA's collective timeouts raised well above the
# length of these runs (see cpu_device_flags).
XLA_FLAGS = cpu_device_flags(2)

RUN = textwrap.dedent(
    """
    import json, sys
    backend, mode, n_train, n_test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from helpers.harness.data import load_dataset
    from helpers.harness.distribute import data_parallel, replicas
    from helpers.harness.train import set_seed, train_and_evaluate

    data = load_dataset("digits", n_train=n_train, n_test=n_test, validation_split=0.2, seed=0)
    set_seed(0)
    with data_parallel(enabled=mode == "parallel") as devices:
        inputs = keras.Input(data.image_shape)
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(x))
        model = keras.Model(inputs, keras.layers.Dense(data.num_classes)(x))
        sharded = replicas()
        # the feed data-parallel training uses ("auto" is "arrays" there), for both runs
        result = train_and_evaluate(model, data, epochs=3, batch_size=32, verbose=0,
                                    feed="arrays")
    print(json.dumps({"devices": len(devices), "replicas": sharded, "loss": result.history["loss"],
                      "val_loss": result.history["val_loss"], "test_loss": result.test_loss,
                      "test_top1": result.test_top1,
                      "weights": [w.tolist() for w in model.get_weights()]}))
    """
)


def run(backend, mode, n_train=648, n_test=202):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": XLA_FLAGS}
    done = subprocess.run([sys.executable, "-c", RUN, backend, mode, str(n_train), str(n_test)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_two_device_training_matches_one_device(backend):
    # 518 / 130 / 202 images: partial last batches of 6, 2 and 10 images.
    single, parallel = run(backend, "single"), run(backend, "parallel")
    assert single["replicas"] == 1
    assert parallel["devices"] == 2 and parallel["replicas"] == 2
    # Same seed, same data order, gradients averaged over the same global batch:
    # only the order of floating-point sums differs.
    np.testing.assert_allclose(parallel["loss"], single["loss"], rtol=1e-4)
    np.testing.assert_allclose(parallel["val_loss"], single["val_loss"], rtol=1e-4)
    assert abs(parallel["test_loss"] - single["test_loss"]) < 1e-4 * single["test_loss"]
    for ours, reference in zip(parallel["weights"], single["weights"]):
        np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.slow
def test_jax_data_parallel_runs_on_splits_that_do_not_divide_evenly():
    """517 / 130 / 201 images on 2 devices: JAX needs even batches, the helper trims."""
    result = run("jax", "parallel", n_train=647, n_test=201)
    assert result["replicas"] == 2 and result["test_top1"] > 0.5


# The PyTorch session (KERAS_BACKEND=torch, quick tests only) runs these two.
only_on_torch = pytest.mark.skipif(keras.backend.backend() != "torch",
                                   reason="the PyTorch backend's refusal")


@only_on_torch
def test_data_parallel_on_torch_says_what_to_use_instead():
    with pytest.raises(ValueError, match="JAX and TensorFlow backends, not 'torch'.*"
                                         "data_parallel=False"):
        with data_parallel():
            pass


@only_on_torch
def test_a_notebook_asking_for_data_parallel_on_torch_is_refused():
    with pytest.raises(ValueError, match="JAX and TensorFlow backends, not 'torch'"):
        use_data_parallel(True)
    assert use_data_parallel(False) == ["default device"]


def test_disabled_data_parallel_is_one_default_device():
    with data_parallel(enabled=False) as devices:
        assert devices == ["default device"]


# A small version of the ViT smoke run, in whole batches (576 training, 64 validation
# and 320 test images): on JAX a smaller last batch is one more compilation per step.
NOTEBOOK_RUNS = {
    "vit": {"dataset": "digits", "n_train": 640, "n_test": 320, "epochs": 3, "batch_size": 64,
            "image_size": 16, "patch_size": 4, "projection_dim": 16, "num_heads": 2,
            "transformer_layers": 1, "mlp_head_units": [32]},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOK_RUNS))
def test_a_notebook_trains_data_parallel_on_two_jax_devices(tmp_path, name):
    import nbformat
    import papermill

    from conftest import ROOT
    from helpers.book import runner as book

    notebook = ROOT / "book" / f"{name}.ipynb"
    parameters = book.notebook_parameters(book.load_profile(ROOT, "smoke"), notebook,
                                          {**NOTEBOOK_RUNS[name], "results_dir": "out",
                                           "data_parallel": True})
    # The kernel inherits this process's environment.
    with book.environment_variables(KERAS_BACKEND="jax", XLA_FLAGS=XLA_FLAGS):
        papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name),
                                   parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(tmp_path))
    executed = nbformat.read(tmp_path / notebook.name, as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "training on cpu:0, cpu:1" in text
    record = json.loads((tmp_path / "out" / f"{name}.json").read_text())
    assert record["backend"] == "jax" and record["epochs"] == 3
    assert record["history"]["loss"][-1] < record["history"]["loss"][0]
    assert record["test_top1"] > 0.15  # three short epochs of a small model; chance is 0.1
