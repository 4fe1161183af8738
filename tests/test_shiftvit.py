"""The ShiftViT notebook: its exported layers against NumPy, its parameters, its smoke run.

The fast tests run on the active backend (TensorFlow by default; also run them
with KERAS_BACKEND=jax and KERAS_BACKEND=torch).
"""

import ast
from math import erf

import keras
import numpy as np
import papermill
import pytest
from bs4 import BeautifulSoup
from keras import ops

import helpers.harness.data
from helpers.harness.parameters import Parameters
from helpers.harness.records import read_record
from helpers.papers import build, defaults
from helpers.papers.layers import StochasticDepth
from helpers.papers.shiftvit import (
    NORMALIZATIONS,
    Shift,
    build_shiftvit,
    normalization_layer,
    patch_merging,
    shift_block,
    shiftvit_augmentation,
)

from conftest import (ROOT, assert_stops_before_loading_data, executed_notebook, shown_records,
                      start_cell_namespace)

NOTEBOOK = ROOT / "book" / "shiftvit.ipynb"


def numpy_shift(x, num_div, s):
    """Reference: the official code's assignments into a zero map, channels last."""
    g = x.shape[-1] // num_div
    out = np.zeros_like(x)
    out[:, :, :-s, :g] = x[:, :, s:, :g]  # left
    out[:, :, s:, g:2 * g] = x[:, :, :-s, g:2 * g]  # right
    out[:, :-s, :, 2 * g:3 * g] = x[:, s:, :, 2 * g:3 * g]  # up
    out[:, s:, :, 3 * g:4 * g] = x[:, :-s, :, 3 * g:4 * g]  # down
    out[..., 4 * g:] = x[..., 4 * g:]
    return out


def shift(x, num_div, s):
    return ops.convert_to_numpy(Shift(num_div, s)(x))


@pytest.mark.parametrize("channels,num_div,s", [
    (4, 4, 1), (12, 4, 2), (20, 5, 1), (13, 4, 2), (48, 12, 3), (96, 12, 1), (30, 12, 2),
])
def test_shift_moves_four_groups_by_shift_pixel(channels, num_div, s):
    x = np.random.default_rng(channels).normal(size=(2, 7, 6, channels)).astype("float32")
    np.testing.assert_array_equal(shift(x, num_div, s), numpy_shift(x, num_div, s))


def test_shift_moves_each_group_its_own_way_and_zeroes_what_it_leaves():
    x = np.arange(1, 1 + 5 * 5, dtype="float32").reshape(1, 5, 5, 1).repeat(5, axis=-1)
    out = shift(x, 5, 2)
    ramp = x[0, :, :, 0]
    np.testing.assert_array_equal(out[0, :, :3, 0], ramp[:, 2:])  # left: column w takes w + 2
    np.testing.assert_array_equal(out[0, :, 2:, 1], ramp[:, :3])  # right
    np.testing.assert_array_equal(out[0, :3, :, 2], ramp[2:, :])  # up
    np.testing.assert_array_equal(out[0, 2:, :, 3], ramp[:3, :])  # down
    for channel, vacated in ((0, np.s_[:, 3:]), (1, np.s_[:, :2]), (2, np.s_[3:, :]),
                             (3, np.s_[:2, :])):
        assert (out[0, :, :, channel][vacated] == 0).all()
    np.testing.assert_array_equal(out[0, :, :, 4], ramp)


@pytest.mark.parametrize("channels", [96, 192, 384, 768])
def test_a_third_of_the_channels_move_at_every_stage_width(channels):
    x = np.random.default_rng(0).normal(size=(1, 4, 4, channels)).astype("float32")
    moved = (shift(x, 12, 1) != x).any(axis=(0, 1, 2))
    assert moved.sum() == channels // 3 and moved[:channels // 3].all()


def test_shift_has_no_weights_and_round_trips_through_its_config():
    layer = Shift(num_div=8, shift_pixel=2, name="s")
    layer.build((None, 6, 6, 16))
    assert layer.count_params() == 0
    clone = Shift.from_config(layer.get_config())
    assert (clone.num_div, clone.shift_pixel, clone.name) == (8, 2, "s")


def test_a_shift_of_zero_pixels_is_the_identity():
    x = np.random.default_rng(0).normal(size=(2, 5, 4, 24)).astype("float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(Shift(num_div=12, shift_pixel=0)(x)), x)
    # On a 1x1 map too, where no shift of a pixel or more fits.
    one = x[:, :1, :1]
    np.testing.assert_array_equal(ops.convert_to_numpy(Shift(num_div=12, shift_pixel=0)(one)), one)


def test_the_no_shift_model_has_the_shift_models_weights_and_different_outputs():
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype="uint8")
    p = {"image_size": 36, "crop_size": 32, "num_shift_blocks_per_stages": [1, 1],
         "projected_dim": 24}
    keras.utils.set_random_seed(0)
    shifted = build("shiftvit", p | {"shift_pixel": 1}, images, 10)
    keras.utils.set_random_seed(0)
    still = build("shiftvit", p | {"shift_pixel": 0}, images, 10)
    assert shifted.count_params() == still.count_params()
    still.set_weights(shifted.get_weights())
    assert not np.allclose(ops.convert_to_numpy(shifted(images, training=False)),
                           ops.convert_to_numpy(still(images, training=False)))


@pytest.mark.parametrize("kwargs,message", [
    ({"num_div": 3}, "num_div must be >= 4, got 3"),
    ({"shift_pixel": -1}, "shift_pixel must be >= 0, got -1"),
    ({"num_div": 12.0}, "num_div must be an integer, got 12.0"),
    ({"shift_pixel": True}, "shift_pixel must be an integer, got True"),
])
def test_shift_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Shift(**kwargs)


def test_shift_rejects_maps_it_would_empty_and_too_few_channels():
    with pytest.raises(ValueError, match="shift_pixel=2 must be smaller than the 2x2"):
        Shift(12, 2)(keras.Input((2, 2, 24)))
    with pytest.raises(ValueError, match="num_div=12 groups need at least 12 channels, got 8"):
        Shift(12, 1)(keras.Input((4, 4, 8)))


def test_a_shift_block_with_a_zero_mlp_is_the_shift_alone():
    """The residual branch starts after the shift: x -> Shift(x) + MLP(LN(Shift(x)))."""
    inputs = keras.Input((5, 5, 12))
    block = keras.Model(inputs, shift_block(inputs, 4, 1, 2, 0.0, 0.0))
    dense = [layer for layer in block.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [24, 12]
    last = dense[-1]
    last.set_weights([np.zeros_like(w) for w in last.get_weights()])
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 12)).astype("float32")
    out = ops.convert_to_numpy(block(x, training=False))
    np.testing.assert_allclose(out, numpy_shift(x, 4, 1), atol=1e-6)


def numpy_norm(x, kind, gamma, beta, epsilon):
    """Reference: mean and variance over each pixel's channels ("layer") or over the
    positions and channels of each image ("group"), then a scale and offset per channel."""
    axes = (-1,) if kind == "layer" else (1, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + epsilon) * gamma + beta


def randomize(model, names, seed):
    """Random weights for the named layers of ``model``, returned in that order."""
    rng, values = np.random.default_rng(seed), []
    for name in names:
        layer = model.get_layer(name)
        weights = [rng.normal(scale=0.5, size=w.shape).astype("float32")
                   for w in layer.get_weights()]
        layer.set_weights(weights)
        values += weights
    return values


def test_the_normalizations_are_the_keras_examples_and_the_official_codes():
    assert NORMALIZATIONS == ("layer", "group")
    group = normalization_layer("group", 1e-5, "n")
    assert isinstance(group, keras.layers.GroupNormalization) and group.groups == 1
    assert isinstance(normalization_layer("layer", 1e-5, "n"), keras.layers.LayerNormalization)
    with pytest.raises(ValueError, match="normalization must be one of .*got 'batch'"):
        normalization_layer("batch", 1e-5, "n")


@pytest.mark.parametrize("kind", NORMALIZATIONS)
def test_each_normalization_matches_numpy_with_its_epsilon_and_per_channel_affine(kind):
    """A small spread (std 0.2) and epsilon 0.05: an epsilon left at its default shows."""
    x = np.random.default_rng(4).normal(0.3, 0.2, size=(3, 4, 5, 6)).astype("float32")
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, normalization_layer(kind, 0.05, "n")(inputs))
    gamma, beta = randomize(model, ["n"], seed=5)
    assert gamma.shape == beta.shape == (6,)
    out = ops.convert_to_numpy(model(x))
    reference = numpy_norm(x.astype("float64"), kind, gamma, beta, 0.05)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    other = "group" if kind == "layer" else "layer"
    assert not np.allclose(out, numpy_norm(x.astype("float64"), other, gamma, beta, 0.05),
                           atol=1e-3)


def numpy_shift_block(x, weights, kind, num_div, s, epsilon):
    """Reference: shift, normalization, dense + exact GELU, dense, residual (inference)."""
    gamma, beta, w_expand, b_expand, w_project, b_project = weights
    shifted = numpy_shift(x, num_div, s)
    hidden = numpy_norm(shifted, kind, gamma, beta, epsilon) @ w_expand + b_expand
    hidden = 0.5 * hidden * (1 + np.vectorize(erf)(hidden / np.sqrt(2)))
    return shifted + hidden @ w_project + b_project


@pytest.mark.parametrize("kind", NORMALIZATIONS)
def test_a_shift_block_matches_numpy_with_each_normalization(kind):
    x = np.random.default_rng(6).normal(size=(2, 5, 6, 16)).astype("float32")
    inputs = keras.Input(x.shape[1:])
    block = keras.Model(inputs, shift_block(inputs, 4, 1, 2, 0.2, 0.1, 1e-3, kind, name="b"))
    weights = randomize(block, ["b_norm", "b_mlp_expand", "b_mlp_project"], seed=7)
    np.testing.assert_allclose(
        ops.convert_to_numpy(block(x, training=False)),
        numpy_shift_block(x.astype("float64"), weights, kind, 4, 1, 1e-3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", NORMALIZATIONS)
@pytest.mark.parametrize("height,width", [(6, 6), (3, 5)])
def test_patch_merging_matches_numpy_with_each_normalization(kind, height, width):
    """Normalize, pad an odd side with zeros at the bottom or right, 2x2 stride-2 conv."""
    x = np.random.default_rng(8).normal(size=(2, height, width, 8)).astype("float32")
    inputs = keras.Input(x.shape[1:])
    merge = keras.Model(inputs, patch_merging(inputs, 1e-3, kind, name="m"))
    gamma, beta, kernel = randomize(merge, ["m_norm", "m_reduction"], seed=9)
    h = numpy_norm(x.astype("float64"), kind, gamma, beta, 1e-3)
    h = np.pad(h, [(0, 0), (0, height % 2), (0, width % 2), (0, 0)])
    windows = h.reshape(2, h.shape[1] // 2, 2, h.shape[2] // 2, 2, 8)
    reference = np.einsum("nirjsc,rsco->nijo", windows, kernel)
    np.testing.assert_allclose(ops.convert_to_numpy(merge(x)), reference, rtol=1e-5, atol=1e-5)


def test_the_builder_builds_and_runs_with_group_normalization():
    p = small(image_size=20, crop_size=16, projected_dim=12, num_shift_blocks_per_stages=[1, 2],
              num_div=4, normalization="group", epsilon=1e-3)
    model = build("shiftvit", p, x_train=np.zeros((2, 16, 16, 3), dtype="uint8"), num_classes=3)
    norms = [layer for layer in model.layers if "_norm" in layer.name]
    assert [layer.name for layer in norms] == ["stage1_block1_norm", "stage1_merge_norm",
                                               "stage2_block1_norm", "stage2_block2_norm"]
    assert all(isinstance(layer, keras.layers.GroupNormalization) and layer.groups == 1
               and layer.epsilon == 1e-3 for layer in norms)
    as_layer_norm = build("shiftvit", {**p, "normalization": "layer"},
                          x_train=np.zeros((2, 16, 16, 3), dtype="uint8"), num_classes=3)
    assert model.count_params() == as_layer_norm.count_params()  # 2C weights either way
    images = np.random.default_rng(10).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    logits = ops.convert_to_numpy(model(images, training=False))
    assert logits.shape == (4, 3) and np.isfinite(logits).all()


def test_patch_merging_halves_the_side_and_doubles_the_channels():
    for side, merged_side in ((12, 6), (6, 3), (3, 2)):
        out = patch_merging(keras.Input((side, side, 8)))
        assert tuple(out.shape) == (None, merged_side, merged_side, 16)


def test_full_size_model_has_the_parameter_count_of_the_recipe():
    """CIFAR-10 defaults: 48 px crops, patch 4, 96 channels, stages [2, 4, 8, 2], MLP ratio 2."""
    model = build("shiftvit")  # the notebook's defaults, on random 32x32 CIFAR-like images
    block = lambda c: 2 * c + (c * 2 * c + 2 * c) + (2 * c * c + c)  # noqa: E731
    merge = lambda c: 2 * c + 2 * 2 * c * 2 * c  # noqa: E731
    widths = [96, 192, 384, 768]
    expected = (4 * 4 * 3 * 96 + 96) + 768 * 10 + 10
    expected += sum(n * block(c) for n, c in zip([2, 4, 8, 2], widths))
    expected += sum(merge(c) for c in widths[:3])
    assert model.count_params() == expected == 11_690_602
    shifts = [layer for layer in model.layers if isinstance(layer, Shift)]
    assert [s.output.shape[1] for s in shifts] == [12] * 2 + [6] * 4 + [3] * 8 + [2] * 2
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)


def small(**overrides):
    """The notebook's defaults, changed by ``overrides`` (Parameters, as ``run.p``)."""
    return Parameters({**defaults("shiftvit"), **overrides})


def test_the_augmentation_rescales_resizes_and_centre_crops_at_inference():
    augmentation = shiftvit_augmentation(defaults("shiftvit"))  # 52 px, crops of 48
    image = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3)).astype("float32")
    centre = ops.convert_to_numpy(augmentation(image, training=False))
    resized = ops.convert_to_numpy(ops.image.resize(image / 255, (52, 52)))
    np.testing.assert_allclose(centre, resized[:, 2:50, 2:50], atol=1e-5)
    views = ops.convert_to_numpy(augmentation(np.repeat(image, 8, axis=0), training=True))
    assert views.shape == (8, 48, 48, 3) and 0 <= views.min() and views.max() <= 1


def test_drop_path_grows_linearly_over_the_whole_network():
    x_train = np.zeros((2, 16, 16, 3), dtype="uint8")
    p = small(image_size=16, crop_size=16, projected_dim=12, num_shift_blocks_per_stages=[2, 3],
              stochastic_depth_rate=0.2)
    model = build_shiftvit(p, x_train, 3)
    rates = [layer.rate for layer in model.layers if isinstance(layer, StochasticDepth)]
    np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, 0.15, 0.2])
    assert model.output_shape == (None, 3)


def test_the_model_round_trips_through_a_keras_file(tmp_path):
    p = small(image_size=20, crop_size=16, projected_dim=12, num_shift_blocks_per_stages=[1, 1],
              num_div=4, shift_pixel=1, seed=0)
    model = build("shiftvit", p, x_train=np.zeros((2, 16, 16, 3), dtype="uint8"), num_classes=4)
    path = tmp_path / "shiftvit.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images, training=False)),
                               ops.convert_to_numpy(model(images, training=False)), atol=1e-6)
    restored = [layer for layer in loaded.layers if isinstance(layer, Shift)]
    assert [(s.num_div, s.shift_pixel) for s in restored] == [(4, 1), (4, 1)]


def test_shiftvit_defaults_are_the_full_recipe():
    declared = papermill.inspect_notebook(str(NOTEBOOK))
    defaults = {name: ast.literal_eval(info["default"]) for name, info in declared.items()}
    assert defaults | {
        "dataset": "cifar10", "validation_split": 0.2, "image_size": 52, "crop_size": 48,
        "patch_size": 4, "projected_dim": 96, "num_shift_blocks_per_stages": [2, 4, 8, 2],
        "num_div": 12, "shift_pixel": 1, "mlp_expand_ratio": 2, "mlp_dropout_rate": 0.2,
        "stochastic_depth_rate": 0.2, "epsilon": 1e-5, "learning_rate": 1e-3,
        "weight_decay": 1e-4, "weight_decay_mode": "per_step", "normalization": "layer",
        "lr_schedule": "cosine", "warmup_fraction": 0.15,
        "epochs": 100, "batch_size": 256, "early_stopping_patience": 5,
    } == defaults


@pytest.mark.parametrize("parameters,message", [
    ({"num_div": 3}, "parameter num_div must be from 4 (four groups move: left, right, up, "
                     "down) to projected_dim=96 (every group needs a channel), got 3"),
    ({"num_div": 16, "projected_dim": 12},
     "parameter num_div must be from 4 (four groups move: left, right, up, down) to "
     "projected_dim=12 (every group needs a channel), got 16"),
    ({"shift_pixel": 2}, "parameter shift_pixel must be smaller than the smallest feature map it "
                         "shifts (the 48 px crop in 4 px patches, halved at each merge between "
                         "stages [2, 4, 8, 2]), got 2"),
    # the smoke model's maps are 8 and 4 px: a shift of 4 would empty the second stage's
    ({"image_size": 36, "crop_size": 32, "num_shift_blocks_per_stages": [2, 2], "shift_pixel": 4},
     "parameter shift_pixel must be smaller than the smallest feature map it shifts"),
    ({"patch_size": 5}, "parameter patch_size must divide crop_size=48, got 5"),
    ({"normalization": "batch"},
     "parameter normalization must be one of 'layer', 'group', got 'batch'"),
    ({"weight_decay_mode": "tfa"},
     "parameter weight_decay_mode must be one of 'lr_scaled', 'per_step', got 'tfa'"),
    ({"crop_size": 56}, "parameter crop_size must be at most image_size=52, got 56"),
    ({"num_shift_blocks_per_stages": []},
     "parameter num_shift_blocks_per_stages must list at least one stage, got []"),
    ({"num_shift_blocks_per_stages": [2, 0]},
     "parameter num_shift_blocks_per_stages must be > 0, got [2, 0]"),
    ({"stochastic_depth_rate": 1.0}, "parameter stochastic_depth_rate must be in [0, 1), got 1.0"),
    ({"early_stopping_patience": -1}, "parameter early_stopping_patience must be >= 0, got -1"),
    ({"shift_pixel": -1}, "parameter shift_pixel must be >= 0, got -1"),
    ({"learning_rate": 0}, "parameter learning_rate must be > 0, got 0"),
    ({"warmup_fraction": 1.5}, "parameter warmup_fraction must be in [0, 1), got 1.5"),
    ({"num_shift_blocks_per_stages": [2, "4"]},
     "parameter num_shift_blocks_per_stages must be a list of int"),
    ({"projection_dim": 64}, "parameter projection_dim is not declared by this notebook: did you "
                             "mean projected_dim?"),
])
def test_bad_parameters_stop_the_shiftvit_notebook_at_once(parameters, message, monkeypatch):
    assert_stops_before_loading_data(NOTEBOOK, parameters, message, monkeypatch)


@pytest.mark.parametrize("crop_size,patch_size,stages,shift_pixel", [
    (48, 4, [2, 4, 8, 2], 1), (32, 4, [2, 2], 3), (40, 4, [1, 1, 1, 1], 1), (36, 4, [1, 1, 1], 2),
    (48, 4, [2], 11),
])
def test_the_shift_rule_lets_through_exactly_the_shifts_the_maps_can_take(
        crop_size, patch_size, stages, shift_pixel, monkeypatch):
    """The start cell's closed form against the maps of the built model: the largest
    shift the smallest map takes gets through to the data, one pixel more stops."""
    parameters = {"image_size": crop_size, "crop_size": crop_size, "patch_size": patch_size,
                  "projected_dim": 12, "num_shift_blocks_per_stages": stages,
                  "shift_pixel": shift_pixel}
    model = build("shiftvit", parameters, x_train=np.zeros((1, 8, 8, 3), dtype="uint8"),
                  num_classes=2)
    smallest = min(layer.output.shape[1] for layer in model.layers if isinstance(layer, Shift))
    assert shift_pixel == smallest - 1
    assert_stops_before_loading_data(NOTEBOOK, parameters | {"shift_pixel": smallest},
                                     "parameter shift_pixel must be smaller", monkeypatch)

    class Loading(Exception):
        pass

    def loading(*args, **kwargs):
        raise Loading

    monkeypatch.setattr(helpers.harness.data, "load_dataset", loading)
    with pytest.raises(Loading):
        start_cell_namespace(NOTEBOOK, parameters)


# End to end, on the book built once per session with the smoke profile.

def executed_outputs(smoke_build):
    nb = executed_notebook(smoke_build, "shiftvit")
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.slow
def test_shiftvit_smoke_run_learns_well_above_chance(smoke_build):
    results = smoke_build["site"] / "book" / "results"
    record = read_record(results / "shiftvit.json")
    assert record["dataset"] == "digits" and record["backend"] == "tensorflow"
    assert record["epochs"] == record["parameters"]["epochs"] == 10
    assert record["feature_sides"] == [8, 4]
    assert record["test_top1"] > 0.7, record["test_top1"]  # 10 classes: chance is 10%
    assert record["history"]["loss"][-1] < record["history"]["loss"][0]
    assert (results / record["model_file"]).stat().st_size > 0
    print(f"ShiftViT smoke: top-1 {record['test_top1']:.2%}, notebook "
          f"{smoke_build['seconds']['shiftvit']:.0f} s, training {record['train_seconds']:.0f} s")


@pytest.mark.slow
def test_executed_shiftvit_notebook_has_its_figures_and_no_errors(smoke_build):
    outputs = executed_outputs(smoke_build)
    assert not [o for o in outputs if o.output_type == "error"]
    # the schematic drawn from the run's parameters, augmentation, learning curves, the
    # shift before/after, predictions
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("data:image/png;base64" in h and "Animation" in h for h in html)
    text = "".join(o.get("text", "") for o in outputs)
    assert "Shift matches the NumPy slicing reference" in text
    assert "shift_block matches the NumPy reference with both normalizations" in text
    assert "patch_merging matches the NumPy reference with both normalizations" in text
    assert "loaded it back: same logits" in text
    assert "Epoch 10/10" in text and "\r" not in text


@pytest.mark.slow
def test_site_has_the_shiftvit_page_with_its_figures_and_numbers(smoke_build):
    path = smoke_build["site"] / "_build" / "html" / "book" / "shiftvit.html"
    page = BeautifulSoup(path.read_text(), "html.parser")
    assert "ShiftViT: attention replaced by a shift" in page.title.text
    assert len([img for img in page.find_all("img") if "_images/" in img.get("src", "")]) >= 4
    # the animation of the shift: matplotlib's player, its frames embedded in the page
    assert page.find("img", id=lambda value: value and value.startswith("_anim_img"))
    assert "data:image/png;base64" in str(page)
    record = shown_records(smoke_build)["shiftvit"]
    text = " ".join(page.get_text().split())
    assert f"reached {round(100 * record['test_top1'], 2)}% top-1" in text
    assert f"{record['parameter_count']:,} parameters" in text
    assert (f"{record['epochs']} epochs on {record['dataset']}, Keras backend "
            f"{record['backend']})") in text
