"""Mixed precision: the ``precision`` parameter of every training notebook.

``start`` checks it and prints it; the notebook builds its model inside
``with run.precision():`` (``helpers.harness.run``), so that the model computes
in 16 bits with float32 weights while everything else stays in float32. Each
paper's model is checked here against the same model in float32, with the same
weights: its logits are float32 and close to the float32 ones, and a
mixed_float16 training step with the paper's optimizer moves the weights and
keeps the loss finite (Keras's ``compile`` adds loss scaling).
"""

import ast
import json

import keras
import nbformat
import numpy as np
import pytest

from helpers import papers
from helpers.harness.data import Dataset
from helpers.harness.parameters import Parameters
from helpers.harness.records import write_record
from helpers.harness.run import Run, describe_precision, dtype_policy
from helpers.harness.train import (
    LearningRateRecorder,
    TrainResult,
    set_seed,
    train_and_evaluate,
)
from helpers.papers import MODELS

from conftest import ROOT, assert_stops_before_loading_data, infer, start_cell_namespace

MIXED = ("mixed_bfloat16", "mixed_float16")

# Each paper's model at a size that builds and runs in a few seconds on every backend.
TINY = {
    "vit": {"image_size": 16, "patch_size": 4, "projection_dim": 16, "num_heads": 2,
            "transformer_layers": 1, "mlp_head_units": [16]},
    "spt_lsa": {"image_size": 16, "patch_size": 4, "projection_dim": 16, "num_heads": 2,
                "transformer_layers": 1, "mlp_head_units": [16]},
    "perceiver": {"image_size": 16, "patch_size": 2, "position_encoding": "fourier",
                  "num_bands": 4, "num_latents": 8, "projection_dim": 16, "num_heads": 2,
                  "num_transformer_blocks": 1, "num_iterations": 1},
    "cct": {"conv_layers": 1, "conv_channels": 8, "projection_dim": 16, "num_heads": 2,
            "transformer_layers": 1, "transformer_units": [16, 16]},
    "shiftvit": {"image_size": 20, "crop_size": 16, "patch_size": 4, "projected_dim": 16,
                 "num_shift_blocks_per_stages": [1, 1], "num_div": 4},
}

# Relative error of the mixed logits, max |mixed - float32| / max |float32|: at most
# eight machine epsilons of the compute dtype (2**-7 for bfloat16's 8 significant bits,
# 2**-10 for float16's 11: 6.3% and 0.8%), a few roundings carried through the model.
# Measured on these models, four seeds, three backends: 0.8 to 2 epsilons, up to 4 for
# the Perceiver. A part that overflows or is computed wrongly in 16 bits gives inf or
# NaN or an error of the order of the logits instead; the Fourier features, whose error
# would hide in a tiny model, have their own test (test_perceiver.py).
EPSILON = {"bfloat16": 2.0**-7, "float16": 2.0**-10}
TOLERANCE = {policy: 8 * EPSILON[policy.removeprefix("mixed_")] for policy in MIXED}


@pytest.fixture(autouse=True)
def float32_afterwards():
    """Every test leaves Keras's global policy as the other tests expect it."""
    yield
    keras.config.set_dtype_policy("float32")


def tiny_images(count=4, side=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), dtype="uint8")


def build_tiny(name, policy, images, num_classes=10):
    """Paper ``name``'s tiny model, built under ``policy``, weights seeded identically."""
    with dtype_policy(policy):
        set_seed(0)
        return papers.build(name, {**papers.defaults(name), **TINY[name]}, images, num_classes)


def float_weight_dtypes(model):
    """The dtypes of the model's floating-point weights (Normalization also counts in integers)."""
    dtypes = {keras.backend.standardize_dtype(w.dtype) for w in model.weights}
    return {dtype for dtype in dtypes if "float" in dtype}


def as_float32(tensor):
    return keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32"))


# --- the parameter ------------------------------------------------------------------------

def test_every_notebook_declares_precision_float32_by_default():
    for name in MODELS:
        cell = next(c for c in nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4).cells
                    if "parameters" in c.metadata.get("tags", []))
        assert 'precision: str = "float32"  # ' in cell.source, name
        assert papers.defaults(name).precision == "float32"


@pytest.mark.parametrize("name", MODELS)
def test_every_notebook_builds_its_trained_model_in_its_precision(name):
    """Each call of the notebook's builder on ``run.p`` sits in ``with run.precision():``."""
    cells = [c.source for c in nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4).cells
             if c.cell_type == "code" and not c.source.startswith("# @save")]
    builders = {f"build_{name}", "build_vit"}  # the SPT + LSA notebook also builds a ViT
    inside, outside = 0, 0
    for tree in map(ast.parse, cells):
        blocks = [node for node in ast.walk(tree) if isinstance(node, ast.With)
                  and ast.unparse(node.items[0].context_expr) == "run.precision()"]
        covered = {id(n) for block in blocks for statement in block.body
                   for n in ast.walk(statement)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and ast.unparse(node.func) in builders
                    and node.args and ast.unparse(node.args[0]) == "run.p"):
                if id(node) in covered:
                    inside += 1
                else:
                    outside += 1
    assert inside >= 1 and outside == 0, (inside, outside)


@pytest.mark.parametrize("name", MODELS)
def test_an_unknown_precision_stops_the_notebook_naming_the_parameter(name, monkeypatch):
    assert_stops_before_loading_data(
        ROOT / "book" / f"{name}.ipynb", {"precision": "float16"},
        "parameter precision must be one of 'float32', 'mixed_bfloat16', 'mixed_float16', "
        "got 'float16'", monkeypatch)


def test_start_prints_the_precision_and_resets_the_global_policy(capsys):
    keras.config.set_dtype_policy("mixed_float16")  # as a mixed run before would leave it
    namespace = start_cell_namespace(ROOT / "book" / "cct.ipynb",
                                     {"dataset": "digits", "n_train": 40, "n_test": 20,
                                      "precision": "mixed_bfloat16"})
    assert keras.config.dtype_policy().name == "float32"
    assert describe_precision("mixed_bfloat16") in capsys.readouterr().out
    run = namespace["run"]
    with run.precision():
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        layer = keras.layers.Dense(2)
    assert keras.config.dtype_policy().name == "float32"
    assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")


def test_the_precision_lines():
    assert describe_precision("float32").startswith("precision float32:")
    assert "computes in bfloat16" in describe_precision("mixed_bfloat16")
    assert "loss scaled" in describe_precision("mixed_float16")
    assert "loss scaled" not in describe_precision("mixed_bfloat16")


def test_the_policy_comes_back_after_an_error_in_the_block():
    with pytest.raises(RuntimeError), dtype_policy("mixed_float16"):
        raise RuntimeError("a failing build")
    assert keras.config.dtype_policy().name == "float32"


def test_a_run_without_a_precision_parameter_builds_in_float32():
    run = Run("old", Parameters({"epochs": 1}))
    with run.precision():
        assert keras.config.dtype_policy().name == "float32"


# --- each paper's model -------------------------------------------------------------------

@pytest.mark.parametrize("policy", MIXED)
@pytest.mark.parametrize("name", MODELS)
def test_mixed_logits_are_float32_and_close_to_the_float32_models(name, policy):
    images = tiny_images()
    reference = build_tiny(name, "float32", images)
    mixed = build_tiny(name, policy, images)
    mixed.set_weights(reference.get_weights())
    assert mixed.compute_dtype == policy.removeprefix("mixed_")
    assert float_weight_dtypes(mixed) == {"float32"}

    expected = infer(reference, images)
    logits = infer(mixed, images)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    error = np.abs(logits - expected).max() / np.abs(expected).max()
    assert 0 < error <= TOLERANCE[policy], error  # > 0: it did compute in 16 bits


@pytest.mark.parametrize("name", MODELS)
def test_a_mixed_float16_step_scales_the_loss_and_moves_every_weight(name):
    images = tiny_images(8)
    model = build_tiny(name, "mixed_float16", images)
    optimizer = papers.optimizer(name, {**papers.defaults(name), **TINY[name]})
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.optimizer.inner_optimizer is optimizer
    before = [as_float32(w) for w in model.trainable_weights]
    labels = np.arange(8) % 10
    # A step whose scaled gradients overflow float16 is skipped (and the scale halved):
    # at most a few, before the weights move.
    for _ in range(4):
        loss = model.train_on_batch(images, labels)
        assert np.isfinite(loss)
        if not np.array_equal(as_float32(model.trainable_weights[0]), before[0]):
            break
    moved = [not np.array_equal(as_float32(w), b) for w, b in zip(model.trainable_weights, before)]
    assert all(moved), [w.path for w, m in zip(model.trainable_weights, moved) if not m]
    assert float_weight_dtypes(model) == {"float32"}


# --- the harness around a mixed model: training, resuming, records ---------------------

class Crash(keras.callbacks.Callback):
    """Stands for a dead kernel: raises when ``epoch`` begins, after the backup of the one
    before. The epoch before trains at a loss scale of 2**10 instead of Keras's 2**15, so
    that a restored scale differs from a fresh one."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.scale = epoch, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch - 1:
            self.model.optimizer.dynamic_scale.assign(2.0**10)
        if epoch == self.epoch:
            self.scale = float(as_float32(self.model.optimizer.dynamic_scale))
            raise KeyboardInterrupt("crash")


def mixed_classifier(data):
    with dtype_policy("mixed_float16"):
        inputs = keras.Input(data.image_shape)
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(x))
        return keras.Model(inputs, keras.layers.Dense(data.num_classes, dtype="float32")(x))


def test_a_mixed_float16_run_trains_resumes_and_records_its_precision(digits_split, tmp_path):
    """``train_and_evaluate`` with loss scaling; the backup brings back the optimizer
    with its step count and loss scale; the record names the precision."""
    # restore_best=False: what is tested is the optimizer's state, not the best epoch's weights.
    options = dict(epochs=3, batch_size=32, verbose=0, backup_dir=tmp_path / "backup",
                   schedule="cosine", weight_decay_mode="per_step", restore_best=False)
    steps = -(-len(digits_split.x_train) // 32)
    set_seed(0)
    first, crash = mixed_classifier(digits_split), Crash(2)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(first, digits_split, callbacks=[crash], **options)
    assert isinstance(first.optimizer, keras.optimizers.LossScaleOptimizer)

    set_seed(1)
    model, recorder = mixed_classifier(digits_split), LearningRateRecorder()
    restored = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: restored.append(
        float(as_float32(model.optimizer.dynamic_scale))))
    result = train_and_evaluate(model, digits_split, callbacks=[recorder, probe], **options)
    assert result.resumed_epochs == 2 and result.epochs == 3
    assert recorder.steps == list(range(2 * steps, 3 * steps))
    assert restored[0] == crash.scale == 2.0**10
    assert all(np.isfinite(result.history["loss"])) and result.test_top1 > 0.3

    path = write_record(tmp_path, "cct", result, data=digits_split,
                        parameters={"epochs": 3, "precision": "mixed_float16"})
    assert json.loads(path.read_text())["precision"] == "mixed_float16"


def test_a_record_without_a_precision_says_float32(tmp_path):
    x = np.zeros((4, 8, 8, 3), np.uint8)
    y = np.arange(4) % 2
    result = TrainResult(history={"loss": [1.0]}, test_loss=1.0, test_top1=0.5, test_top5=1.0,
                         epochs=1, best_epoch=None, parameter_count=1, train_seconds=1.0,
                         train_images_per_second=4.0, epoch_seconds=[1.0])
    path = write_record(tmp_path, "vit", result, data=Dataset("mine.npz", x, y, x, y, ["a", "b"]),
                        parameters={"epochs": 1})
    assert json.loads(path.read_text())["precision"] == "float32"


# --- per-layer precision (runs/bench/precision-tries/tries.py) -----------------------------

def load_tries():
    """The per-layer precision script the Performance page's record comes from."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location(
        "precision_tries", ROOT / "runs" / "bench" / "precision-tries" / "tries.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compute_dtypes(model, classes):
    """The compute dtypes of the model's layers (nested ones included) of ``classes``,
    but its last, the logits layer, float32 by design."""
    found = set()
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, classes) and layer is not model.layers[-1]:  # float32 logits
            found.add(keras.backend.standardize_dtype(layer.compute_dtype))
        stack.extend(getattr(layer, "_layers", []) or [])
        stack.extend(v for v in vars(layer).values() if isinstance(v, keras.layers.Layer))
    return found


# (model, mode, backend) that the per-layer tries cannot train without casts in the
# model's code (the Perceiver cannot run products-bfloat16 on any, as its record says)
CANNOT_MIX_AS_IS = {("cct", "products-bfloat16", "torch")}


@pytest.mark.parametrize("name", ["vit", "cct"])
def test_the_per_layer_precision_modes_give_each_layer_its_type_and_train(name):
    """Every mode of the per-layer tries builds the model with the types it names (the
    product layers in bfloat16 and the rest in float32, or the normalizations alone in
    float32) and takes a training step with finite loss, on this session's backend."""
    tries = load_tries()
    images = tiny_images(8)
    labels = np.arange(8) % 10
    expected = {  # mode: (products' compute dtypes, normalizations' compute dtypes)
        "float32": ({"float32"}, {"float32"}),
        "mixed_bfloat16": ({"bfloat16"}, {"bfloat16"}),
        "normalization-float32": ({"bfloat16"}, {"float32"}),
        "products-bfloat16": ({"bfloat16"}, {"float32"}),
    }
    assert set(tries.MODES) == set(expected)
    p = {**papers.defaults(name), **TINY[name]}
    for mode, (policy, classes, other) in tries.MODES.items():
        keras.config.set_dtype_policy(policy)
        try:
            with tries.made_with(classes, other):
                set_seed(0)
                model = papers.build(name, p, images, 10)
        finally:
            keras.config.set_dtype_policy("float32")
        products = compute_dtypes(model, (keras.layers.Dense, keras.layers.EinsumDense))
        norms = compute_dtypes(model, tries.NORMALIZATION)
        assert (products, norms) == expected[mode], mode
        model.compile(optimizer=papers.optimizer(name, p),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if (name, mode, keras.backend.backend()) in CANNOT_MIX_AS_IS:
            # PyTorch does not cast a float32 input of a bfloat16 product, as TensorFlow
            # and JAX do: a float32 layer holding one (the CCT's sequence pooling) fails
            with pytest.raises((RuntimeError, TypeError), match="(?i)bfloat16|dtype|type"):
                model.train_on_batch(images.astype("float32"), labels)
            continue
        loss = model.train_on_batch(images.astype("float32"), labels)
        assert np.isfinite(float(np.asarray(loss).ravel()[0])), mode
    # the wrapped constructors are put back: a layer made now takes the global policy
    assert keras.layers.Dense(2).compute_dtype == "float32"
