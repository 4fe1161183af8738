"""The SPT + LSA notebook: its exported layers and builder (helpers/papers/spt_lsa.py)
against NumPy references, its parameter checks, and its smoke run in the built book."""

import ast
import math
import re

import keras
import numpy as np
import papermill
import pytest
from keras import ops

from helpers import papers
from helpers.harness.parameters import Parameters
from helpers.harness.records import read_record
from helpers.harness.run import dtype_policy
from helpers.harness.train import adamw, decay_only_trajectory
from helpers.papers.spt_lsa import (
    DEFAULTS,
    SHIFTS,
    LocalitySelfAttention,
    ShiftedPatchTokenization,
    build_spt_lsa,
    diagonal_mask_value,
    shift_images,
)
from helpers.papers.vit import attention_scores, build_vit

from conftest import ROOT, assert_stops_before_loading_data, executed_notebook, shown_records

NOTEBOOK = ROOT / "book" / "spt_lsa.ipynb"
DIRECTIONS = ("left-up", "left-down", "right-up", "right-down")  # the source's order


# --- independent NumPy references -------------------------------------------------------

def numpy_shift(images, direction, s):
    """Explicit slicing: the block of the image that survives, placed where it lands."""
    out = np.zeros_like(images)
    if direction == "left-up":
        out[:, :-s, :-s] = images[:, s:, s:]
    elif direction == "left-down":
        out[:, s:, :-s] = images[:, :-s, s:]
    elif direction == "right-up":
        out[:, :-s, s:] = images[:, s:, :-s]
    elif direction == "right-down":
        out[:, s:, s:] = images[:, :-s, :-s]
    return out


def numpy_patches(images, p):
    n, h, w, _ = images.shape
    rows = []
    for r in range(h // p):
        for c in range(w // p):
            rows.append(images[:, r * p:(r + 1) * p, c * p:(c + 1) * p, :].reshape(n, -1))
    return np.stack(rows, axis=1)


def numpy_softmax(scores):
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_weights_of(layer):
    names = ("query_dense", "key_dense", "value_dense", "output_dense")
    return [ops.convert_to_numpy(v) for name in names for v in getattr(layer, name).weights]


def numpy_attention(x, layer, temperature, mask_diagonal):
    """``temperature``: one scalar, or one value per head."""
    wq, bq, wk, bk, wv, bv, wo, bo = attention_weights_of(layer)
    n, t, _ = x.shape
    h, d = layer.num_heads, layer.key_dim

    def heads(y):
        return y.reshape(n, t, h, d).transpose(0, 2, 1, 3)

    q, k, v = heads(x @ wq + bq), heads(x @ wk + bk), heads(x @ wv + bv)
    scores = q @ k.transpose(0, 1, 3, 2) / np.reshape(temperature, (1, -1, 1, 1))
    if mask_diagonal:
        scores = np.where(np.eye(t, dtype=bool), -np.inf, scores)
    weights = numpy_softmax(scores)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, h * d)
    return out @ wo + bo, weights


def probe(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# --- shifted patch tokenization ---------------------------------------------------------

@pytest.mark.parametrize("patch_size", [2, 3, 4, 5, 6, 7])
def test_each_shift_moves_the_image_half_a_patch_diagonally_and_fills_zeros(patch_size):
    images = probe((2, 3 * patch_size, 3 * patch_size, 3), seed=patch_size)
    s = patch_size // 2
    for direction in DIRECTIONS:
        rows, cols = SHIFTS[direction]
        ours = ops.convert_to_numpy(shift_images(images, rows * s, cols * s))
        np.testing.assert_array_equal(ours, numpy_shift(images, direction, s))


def test_shifted_images_stack_the_original_then_the_four_shifts_in_the_source_order():
    images = probe((2, 15, 15, 3))
    stacked = ops.convert_to_numpy(ShiftedPatchTokenization(15, 5, 8).shifted_images(images))
    assert stacked.shape == (2, 15, 15, 15)
    np.testing.assert_array_equal(stacked[..., :3], images)
    for group, direction in enumerate(DIRECTIONS, start=1):
        np.testing.assert_array_equal(stacked[..., 3 * group:3 * group + 3],
                                      numpy_shift(images, direction, 2))


@pytest.mark.parametrize("size,patch_size", [(12, 4), (15, 5), (12, 3)])
def test_tokens_are_layer_normalized_shifted_patches_projected_plus_positions(size, patch_size):
    images = probe((2, size, size, 3), seed=size)
    layer = ShiftedPatchTokenization(size, patch_size, 6)
    tokens = ops.convert_to_numpy(layer(images))
    # Non-trivial layer-norm scale and offset, so that they are checked too.
    gamma = probe((layer.layer_norm.gamma.shape[0],), seed=1)
    beta = probe((layer.layer_norm.beta.shape[0],), seed=2)
    layer.layer_norm.gamma.assign(gamma)
    layer.layer_norm.beta.assign(beta)
    tokens = ops.convert_to_numpy(layer(images))

    stacked = np.concatenate(
        [images] + [numpy_shift(images, d, patch_size // 2) for d in DIRECTIONS], axis=-1)
    flat = numpy_patches(stacked, patch_size)
    normed = (flat - flat.mean(-1, keepdims=True)) / np.sqrt(flat.var(-1, keepdims=True) + 1e-6)
    kernel, bias = (ops.convert_to_numpy(v) for v in layer.encoder.projection.weights)
    table = ops.convert_to_numpy(layer.encoder.position_embedding)
    expected = (normed * gamma + beta) @ kernel + bias + table
    assert tokens.shape == (2, (size // patch_size) ** 2, 6)
    np.testing.assert_allclose(tokens, expected, rtol=1e-4, atol=1e-4)


def test_tokenizer_rejects_patch_sizes_it_cannot_shift_or_tile():
    with pytest.raises(ValueError, match="patch_size"):
        ShiftedPatchTokenization(72, 5, 64)
    with pytest.raises(ValueError, match="patch_size"):
        ShiftedPatchTokenization(8, 1, 64)
    with pytest.raises(ValueError, match="expected 16x16 images"):
        ShiftedPatchTokenization(16, 4, 8)(probe((1, 12, 12, 3)))


# --- locality self-attention ------------------------------------------------------------

def test_no_token_attends_to_itself_and_each_row_sums_to_one():
    x = probe((3, 7, 10))
    _, weights = LocalitySelfAttention(num_heads=2, key_dim=4)(x, x, return_attention_scores=True)
    weights = ops.convert_to_numpy(weights)
    assert weights.shape == (3, 2, 7, 7)
    assert np.all(np.diagonal(weights, axis1=-2, axis2=-1) == 0.0)
    assert np.all(weights[..., ~np.eye(7, dtype=bool)] > 0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)


def test_lsa_matches_numpy_masked_attention_at_its_current_temperature():
    x = probe((2, 6, 8))
    layer = LocalitySelfAttention(num_heads=2, key_dim=4)
    layer(x, x)
    layer.temperature.assign(0.7)  # a learned value, far from sqrt(4)
    out, weights = layer(x, x, return_attention_scores=True)
    expected_out, expected_weights = numpy_attention(x, layer, 0.7, mask_diagonal=True)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), expected_weights, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected_out, rtol=1e-4, atol=1e-5)


def test_without_mask_and_with_a_fixed_temperature_it_is_scaled_dot_product_attention():
    x = probe((2, 6, 8), seed=3)
    layer = LocalitySelfAttention(num_heads=2, key_dim=4, diagonal_mask=False,
                                  trainable_temperature=False)
    out, weights = layer(x, x, return_attention_scores=True)
    assert float(ops.convert_to_numpy(layer.temperature)) == pytest.approx(2.0)
    assert not any(v is layer.temperature for v in layer.trainable_weights)
    expected_out, expected_weights = numpy_attention(x, layer, math.sqrt(4), mask_diagonal=False)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), expected_weights, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected_out, rtol=1e-4, atol=1e-5)


def test_without_mask_and_with_a_fixed_temperature_it_equals_keras_multi_head_attention():
    x = probe((2, 6, 8), seed=4)
    ours = LocalitySelfAttention(num_heads=2, key_dim=4, diagonal_mask=False,
                                 trainable_temperature=False)
    out = ops.convert_to_numpy(ours(x, x))
    keras_mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    keras_mha(x, x)
    wq, bq, wk, bk, wv, bv, wo, bo = attention_weights_of(ours)
    keras_mha.set_weights([wq.reshape(8, 2, 4), bq.reshape(2, 4), wk.reshape(8, 2, 4),
                           bk.reshape(2, 4), wv.reshape(8, 2, 4), bv.reshape(2, 4),
                           wo.reshape(2, 4, 8), bo])
    np.testing.assert_allclose(out, ops.convert_to_numpy(keras_mha(x, x)), rtol=1e-4, atol=1e-5)


def test_temperature_starts_at_sqrt_key_dim_and_is_a_trainable_weight():
    layer = LocalitySelfAttention(num_heads=4, key_dim=64)
    x = probe((1, 5, 16))
    layer(x, x)
    assert float(ops.convert_to_numpy(layer.temperature)) == pytest.approx(8.0)
    assert any(v is layer.temperature for v in layer.trainable_weights)
    assert tuple(layer.temperature.shape) == ()


def test_per_head_temperatures_start_at_sqrt_key_dim_one_trainable_value_per_head():
    layer = LocalitySelfAttention(num_heads=3, key_dim=16, temperature_per_head=True)
    x = probe((1, 5, 12))
    layer(x, x)
    assert tuple(layer.temperature.shape) == (3,)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.temperature), [4.0, 4.0, 4.0])
    assert any(v is layer.temperature for v in layer.trainable_weights)


def test_each_head_divides_its_scores_by_its_own_temperature_under_the_mask():
    x = probe((2, 6, 8), seed=5)
    layer = LocalitySelfAttention(num_heads=2, key_dim=4, temperature_per_head=True)
    layer(x, x)
    learned = np.array([0.6, 3.5], "float32")  # distinct: a shared value would not match
    layer.temperature.assign(learned)
    out, weights = layer(x, x, return_attention_scores=True)
    expected_out, expected_weights = numpy_attention(x, layer, learned, mask_diagonal=True)
    weights = ops.convert_to_numpy(weights)
    assert np.all(np.diagonal(weights, axis1=-2, axis2=-1) == 0.0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected_out, rtol=1e-4, atol=1e-5)


def tiny_lsa_classifier(decay_mode="per_step"):
    keras.utils.set_random_seed(0)  # the same weights whatever ran before in this worker
    inputs = keras.Input((6, 8))
    layer = LocalitySelfAttention(num_heads=2, key_dim=4)
    pooled = keras.layers.GlobalAveragePooling1D()(layer(inputs, inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(pooled)), layer


def train_steps(model, layer, *, learning_rate, exempt, steps=5, mode="per_step",
                weight_decay=1e-2):
    """``steps`` AdamW steps at a constant rate; returns the temperature after each."""
    optimizer = adamw(learning_rate, weight_decay, mode)
    if exempt:
        optimizer.exclude_from_weight_decay(var_list=[layer.temperature])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = probe((4, 6, 8)), np.array([0, 1, 2, 0])
    values = []
    for _ in range(steps):
        model.train_on_batch(x, y)
        values.append(float(ops.convert_to_numpy(layer.temperature)))
    return np.array(values)


@pytest.mark.parametrize("mode", ["per_step", "lr_scaled"])
def test_with_no_learning_the_temperature_follows_the_decay_only_trajectory(mode):
    # A zero learning rate: Adam's step is 0, only weight decay moves the temperature
    # (per_step decays whatever the rate; lr_scaled then does not decay at all).
    model, layer = tiny_lsa_classifier()
    values = train_steps(model, layer, learning_rate=0.0, exempt=False, mode=mode)
    expected = decay_only_trajectory(2.0, 1e-2, mode, np.zeros(5))[1:]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_a_temperature_exempt_from_decay_stays_at_its_start_without_learning():
    model, layer = tiny_lsa_classifier()
    values = train_steps(model, layer, learning_rate=0.0, exempt=True)
    np.testing.assert_array_equal(values, np.full(5, 2.0, "float32"))


def test_the_loss_moves_the_temperature_away_from_the_decay_only_trajectory():
    # With a learning rate the gradient of the loss moves the temperature. Adam's
    # first step moves a weight by the whole rate (0.05), whatever the size of its
    # gradient, so after one step the temperature sits 0.05 from where decay alone
    # would put it: thousands of times float rounding. Later steps may turn back
    # (the gradient's sign can flip), so the claim is made on the first step.
    model, layer = tiny_lsa_classifier()
    values = train_steps(model, layer, learning_rate=5e-2, exempt=False)
    decay_only = decay_only_trajectory(2.0, 1e-2, "per_step", np.full(5, 5e-2))[1:]
    assert np.abs(values[0] - decay_only[0]) == pytest.approx(0.05, rel=0.02)
    assert np.max(np.abs(values - decay_only)) >= 0.05 * 0.98
    # Exempt from decay, the learned change is the whole change.
    model, layer = tiny_lsa_classifier()
    exempt = train_steps(model, layer, learning_rate=5e-2, exempt=True)
    assert np.abs(exempt[0] - 2.0) == pytest.approx(0.05, rel=0.02)


def test_attention_dropout_acts_only_in_training():
    x = probe((2, 6, 8))
    layer = LocalitySelfAttention(num_heads=2, key_dim=4, dropout=0.5, seed=0)
    out_a = ops.convert_to_numpy(layer(x, x, training=False))
    out_b = ops.convert_to_numpy(layer(x, x, training=False))
    np.testing.assert_array_equal(out_a, out_b)
    trained = ops.convert_to_numpy(layer(x, x, training=True))
    assert not np.allclose(trained, out_a)
    # The returned weights are those before dropout: rows still sum to 1.
    _, weights = layer(x, x, return_attention_scores=True, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(weights).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_the_diagonal_mask_value_is_finite_in_each_compute_dtype_and_weighs_exactly_zero(dtype):
    value = ops.cast(diagonal_mask_value(dtype), dtype)
    assert np.isfinite(float(ops.convert_to_numpy(ops.cast(value, "float32"))))
    scores = ops.stack([value, ops.cast(0.0, dtype), ops.cast(3.0, dtype)])
    weights = ops.convert_to_numpy(ops.cast(ops.softmax(scores), "float32"))
    assert weights[0] == 0.0
    np.testing.assert_allclose(weights[1:], [1 / (1 + math.e**3), 1 / (1 + math.e**-3)],
                               rtol=1e-2)


def test_lsa_in_mixed_float16_neither_overflows_nor_leaves_weight_on_the_diagonal():
    """Identical tokens whose q . k = 80,000, past float16's largest value, 65,504: divided
    by the temperature (sqrt(8)) before the product, the scores stay finite, and every
    token spreads its attention evenly over the others."""
    tokens = np.ones((2, 5, 16), "float32")
    with dtype_policy("mixed_float16"):
        lsa = LocalitySelfAttention(num_heads=2, key_dim=8)
        lsa(tokens, tokens)
    for dense in (lsa.query_dense, lsa.key_dense):
        dense.kernel.assign(100 * np.eye(16, dtype="float32"))  # q = k = 100 per component
        dense.bias.assign(np.zeros(16, "float32"))
    output, weights = lsa(tokens, tokens, return_attention_scores=True)
    assert keras.backend.standardize_dtype(weights.dtype) == "float16"
    weights = ops.convert_to_numpy(ops.cast(weights, "float32"))
    assert np.isfinite(weights).all() and np.isfinite(ops.convert_to_numpy(output)).all()
    expected = np.broadcast_to((1 - np.eye(5)) / 4, weights.shape)
    np.testing.assert_allclose(weights, expected, atol=1e-3)
    assert (np.diagonal(weights, axis1=-2, axis2=-1) == 0).all()


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_lsa_in_mixed_precision_gives_the_float32_layers_weights(policy):
    probe = np.random.default_rng(0).normal(size=(2, 9, 16)).astype("float32")
    reference = LocalitySelfAttention(num_heads=2, key_dim=8, temperature_per_head=True)
    reference(probe, probe)
    with dtype_policy(policy):
        mixed = LocalitySelfAttention(num_heads=2, key_dim=8, temperature_per_head=True)
        mixed(probe, probe)
    mixed.set_weights(reference.get_weights())
    _, expected = reference(probe, probe, return_attention_scores=True)
    _, weights = mixed(probe, probe, return_attention_scores=True)
    weights = ops.convert_to_numpy(ops.cast(weights, "float32"))
    assert (np.diagonal(weights, axis1=-2, axis2=-1) == 0).all()
    # Within a few roundings of bfloat16 (8 significant bits) or float16 (11).
    np.testing.assert_allclose(weights, ops.convert_to_numpy(expected),
                               atol=0.03 if policy == "mixed_bfloat16" else 0.004)


def test_the_diagonal_mask_refuses_cross_attention():
    with pytest.raises(ValueError, match="as many queries as keys"):
        LocalitySelfAttention(num_heads=1, key_dim=4)(probe((1, 3, 8)), probe((1, 5, 8)))


def test_layers_round_trip_through_their_config():
    lsa = LocalitySelfAttention(4, 64, dropout=0.1, diagonal_mask=False,
                                trainable_temperature=False, seed=3, temperature_per_head=True)
    config = LocalitySelfAttention.from_config(lsa.get_config()).get_config()
    assert config == lsa.get_config()
    assert config["temperature_per_head"] is True
    spt = ShiftedPatchTokenization(72, 6, 64, epsilon=1e-5)
    again = ShiftedPatchTokenization.from_config(spt.get_config())
    assert (again.image_size, again.patch_size, again.projection_dim, again.epsilon) == (
        72, 6, 64, 1e-5)


# --- the models -------------------------------------------------------------------------

SMALL = {"image_size": 32, "patch_size": 8, "projection_dim": 16, "num_heads": 2,
         "transformer_layers": 2, "mlp_head_units": [32]}


def small(**values):
    """The notebook's defaults with a small model (``SMALL``) and ``values`` changed."""
    return Parameters({**DEFAULTS, **SMALL, **values})


def small_models(num_classes=10):
    x = np.zeros((4, 32, 32, 3), np.uint8)
    vanilla = build_vit(small(), x, num_classes)
    sl = build_spt_lsa(small(), x, num_classes)
    return vanilla, sl


def test_sl_vit_differs_from_the_vit_only_in_tokenizer_and_attention():
    vanilla, sl = small_models()
    lsa = [layer for layer in sl.layers if isinstance(layer, LocalitySelfAttention)]
    spt = [layer for layer in sl.layers if isinstance(layer, ShiftedPatchTokenization)]
    assert len(lsa) == 2 and len(spt) == 1
    assert not any(isinstance(layer, keras.layers.MultiHeadAttention) for layer in sl.layers)
    # Extra parameters: patch vectors 5x longer, their layer norm, one temperature per block.
    patch_dim = 8 * 8 * 3
    extra = 4 * patch_dim * 16 + 2 * 5 * patch_dim + 2
    assert sl.count_params() - vanilla.count_params() == extra
    assert sl.output_shape == vanilla.output_shape == (None, 10)


def test_by_default_each_lsa_keeps_one_scalar_temperature():
    assert DEFAULTS["temperature_per_head"] is False
    _, sl = small_models()
    lsa = [layer for layer in sl.layers if isinstance(layer, LocalitySelfAttention)]
    assert [tuple(layer.temperature.shape) for layer in lsa] == [()] * 2


def test_the_builder_with_per_head_temperatures_builds_and_trains_one_step():
    x = (probe((4, 32, 32, 3)) * 50 + 128).clip(0, 255).astype(np.uint8)
    model = build_spt_lsa(small(temperature_per_head=True), x, 3)
    lsa = [layer for layer in model.layers if isinstance(layer, LocalitySelfAttention)]
    assert [tuple(layer.temperature.shape) for layer in lsa] == [(2,)] * 2
    # One more temperature per block than the default's one per block (2 heads).
    assert model.count_params() == build_spt_lsa(small(), x, 3).count_params() + 2
    model.compile(papers.optimizer("spt_lsa", {"temperature_per_head": True}),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [ops.convert_to_numpy(layer.temperature).copy() for layer in lsa]
    loss = model.train_on_batch(x, np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)
    for layer, start in zip(lsa, before):
        assert np.all(ops.convert_to_numpy(layer.temperature) != start)


@pytest.mark.parametrize("shifted_patches,locality_attention", [(True, False), (False, True)])
def test_each_idea_can_be_switched_off_alone(shifted_patches, locality_attention):
    x = np.zeros((4, 32, 32, 3), np.uint8)
    model = build_spt_lsa(small(transformer_layers=1), x, 5, shifted_patches=shifted_patches,
                          locality_attention=locality_attention)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert ("ShiftedPatchTokenization" in kinds) == shifted_patches
    assert ("LocalitySelfAttention" in kinds) == locality_attention
    assert ("MultiHeadAttention" in kinds) == (not locality_attention)


def test_with_both_ideas_off_the_builder_makes_the_vanilla_vit():
    x = np.zeros((4, 32, 32, 3), np.uint8)
    off = build_spt_lsa(small(), x, 10, shifted_patches=False, locality_attention=False)
    vanilla = build_vit(small(), x, 10)
    assert [type(layer).__name__ for layer in off.layers] == [
        type(layer).__name__ for layer in vanilla.layers]
    assert off.count_params() == vanilla.count_params()


def test_the_builder_follows_the_parameters_it_is_given():
    x = np.zeros((2, 16, 16, 1), np.uint8)
    model = papers.build("spt_lsa", {"image_size": 16, "patch_size": 4, "projection_dim": 8,
                                     "num_heads": 3, "transformer_layers": 3,
                                     "mlp_head_units": [8], "dropout_rate": 0.2}, x, 7)
    lsa = [layer for layer in model.layers if isinstance(layer, LocalitySelfAttention)]
    assert [(layer.num_heads, layer.key_dim, layer.dropout) for layer in lsa] == [(3, 8, 0.2)] * 3
    (spt,) = [layer for layer in model.layers if isinstance(layer, ShiftedPatchTokenization)]
    assert (spt.image_size, spt.patch_size, spt.projection_dim) == (16, 4, 8)
    assert model.input_shape == (None, 16, 16, 1) and model.output_shape == (None, 7)
    assert model.name == "spt_lsa_vit"


def test_full_size_sl_vit_has_the_parameter_count_of_the_recipe():
    """CIFAR-100 defaults: 72 px, patch 6, 8 x 64-dim blocks, 4 heads, head 2048/1024."""
    x = np.zeros((4, 32, 32, 3), np.uint8)
    model = build_spt_lsa(Parameters(DEFAULTS), x, 100)
    vit_params = 21_759_019  # helpers.papers.vit at the same recipe (tests/test_vit.py)
    patch_dim = 6 * 6 * 3
    assert model.count_params() == vit_params + 4 * patch_dim * 64 + 2 * 5 * patch_dim + 8
    assert model.count_params() == 21_787_755


def test_attention_read_out_of_the_vit_notebook_works_on_lsa_layers():
    _, sl = small_models()
    layers_ = [layer for layer in sl.layers if isinstance(layer, LocalitySelfAttention)]
    scores = attention_scores(sl, probe((3, 32, 32, 3)) * 50 + 128, attention_layers=layers_)
    assert [s.shape for s in scores] == [(3, 2, 16, 16)] * 2
    for s in scores:
        assert np.all(np.diagonal(s, axis1=-2, axis2=-1) == 0.0)


def test_sl_vit_saves_and_loads_as_a_keras_file(tmp_path):
    _, sl = small_models()
    images = probe((2, 32, 32, 3)) * 50 + 128
    path = tmp_path / "sl_vit.keras"
    sl.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images, training=False)),
                               ops.convert_to_numpy(sl(images, training=False)),
                               rtol=1e-5, atol=1e-5)


# --- the notebook -----------------------------------------------------------------------

def test_spt_lsa_defaults_are_the_source_recipe_with_its_schedule_applied():
    declared = papermill.inspect_notebook(str(NOTEBOOK))
    defaults = {name: ast.literal_eval(info["default"]) for name, info in declared.items()}
    assert defaults | {
        "dataset": "cifar100", "image_size": 72, "patch_size": 6, "transformer_layers": 8,
        "projection_dim": 64, "num_heads": 4, "mlp_head_units": [2048, 1024], "epochs": 50,
        "batch_size": 256, "learning_rate": 1e-3, "weight_decay": 1e-4,
        "lr_schedule": "cosine", "warmup_fraction": 0.1, "validation_split": 0.1,
        "dropout_rate": 0.1, "head_dropout_rate": 0.5,
        # TF Addons' AdamW: 1e-4 of each weight per step; one temperature per LSA layer.
        "weight_decay_mode": "per_step", "temperature_per_head": False,
        # Both ideas, the vanilla ViT beside them, the temperatures decayed like any weight.
        "spt": True, "lsa": True, "train_vanilla": True, "temperature_weight_decay": True,
    } == defaults


@pytest.mark.parametrize("parameters,message", [
    ({"patch_size": 5}, "parameter patch_size must divide image_size=72, got 5"),
    ({"patch_size": 1, "image_size": 8},
     "parameter patch_size must be at least 2, so that SPT shifts by patch_size // 2 > 0 "
     "pixels, got 1"),
    ({"patch_size": 8, "image_size": 8},
     "parameter patch_size must be smaller than image_size=8: LSA needs at least two tokens, "
     "got 8"),
    ({"learning_rate": 0.0}, "parameter learning_rate must be > 0"),
    ({"batch_size": "big"}, "parameter batch_size must be an integer, got 'big'"),
    ({"lr_schedule": "step"}, "parameter lr_schedule must be one of 'constant', 'cosine'"),
    ({"warmup_fraction": 1.0}, "parameter warmup_fraction must be in [0, 1), got 1.0"),
    ({"head_dropout_rate": 1.5}, "parameter head_dropout_rate must be in [0, 1), got 1.5"),
    ({"warmup_steps": 100}, "parameter warmup_steps is not declared by this notebook: did you "
                            "mean warmup_fraction"),
    ({"weight_decay_mode": "tfa"}, "parameter weight_decay_mode must be one of"),
    ({"temperature_per_head": "yes"}, "parameter temperature_per_head must be"),
    ({"spt": "no"}, "parameter spt must be"),
    ({"lsa": 0}, "parameter lsa must be"),
    ({"temperature_weight_decay": "off"}, "parameter temperature_weight_decay must be"),
    ({"spt": False, "lsa": False},
     "parameter train_vanilla must be False when spt and lsa are both False"),
])
def test_bad_parameters_stop_the_spt_lsa_notebook_at_once(parameters, message, monkeypatch):
    assert_stops_before_loading_data(NOTEBOOK, parameters, message, monkeypatch)


# --- the smoke run in the built book (slow) ---------------------------------------------

@pytest.mark.slow
def test_spt_lsa_smoke_run_trains_both_models_well_above_chance(smoke_build):
    record = read_record(smoke_build["site"] / "book" / "results" / "spt_lsa.json")
    assert record["dataset"] == "digits" and record["backend"] == "tensorflow"
    runs = record["runs"]
    assert set(runs) == {"vanilla", "spt_lsa"}
    assert runs["spt_lsa"]["test_top1"] == record["test_top1"]
    assert runs["spt_lsa"]["parameter_count"] == record["parameter_count"] > runs["vanilla"]["parameter_count"]
    for name, run in runs.items():
        assert run["epochs"] == record["parameters"]["epochs"] == 10
        # 10 classes: chance is 10%.
        assert run["test_top1"] > 0.6, (name, run["test_top1"])
        assert run["history"]["loss"][-1] < 0.5 * run["history"]["loss"][0], name
        assert run["train_images_per_second"] > 0 and run["train_seconds"] > 0
    assert record["learning_rate_first_last"][0] == 0.0  # the warmup starts at 0
    print(f"SPT+LSA smoke: vanilla {runs['vanilla']['test_top1']:.2%}, SL-ViT "
          f"{runs['spt_lsa']['test_top1']:.2%}; notebook {smoke_build['seconds']['spt_lsa']:.0f} s, "
          f"training {runs['vanilla']['train_seconds']:.0f} + "
          f"{runs['spt_lsa']['train_seconds']:.0f} s")


@pytest.mark.slow
def test_spt_lsa_notebook_has_its_figures_and_no_errors(smoke_build):
    nb = executed_notebook(smoke_build, "spt_lsa")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # Five shifted views, one token's views, learning rate, curves, attention x2.
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 6
    text = "".join(o.get("text", "") for o in outputs)
    assert text.count("Epoch 10/10") == 2 and "\r" not in text
    assert "diagonal weights: all exactly 0.0" in text
    assert text.count("weights and output equal NumPy's masked attention") == 2


@pytest.mark.slow
def test_site_has_the_spt_lsa_page_with_both_runs_glued(smoke_build):
    from bs4 import BeautifulSoup

    path = smoke_build["site"] / "_build" / "html" / "book" / "spt_lsa.html"
    page = BeautifulSoup(path.read_text(), "html.parser")
    assert "shifted patches and locality self-attention" in page.title.text
    assert len([img for img in page.find_all("img") if "_images/" in img["src"]]) >= 6
    record = shown_records(smoke_build)["spt_lsa"]
    text = " ".join(page.get_text().split())
    vanilla, sl = record["runs"]["vanilla"], record["runs"]["spt_lsa"]
    assert re.search(rf"ViT \(vanilla\) {100 * vanilla['test_top1']:.2f}% "
                     rf"{100 * vanilla['test_top5']:.2f}% {vanilla['parameter_count']:,}", text)
    assert re.search(rf"SL-ViT \(SPT \+ LSA\) {round(100 * sl['test_top1'], 2)}% "
                     rf"{round(100 * sl['test_top5'], 2)}% {sl['parameter_count']:,}", text)
    assert "53.10%" in text and "56.11%" in text
