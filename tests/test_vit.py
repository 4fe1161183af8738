"""The ViT notebook's exported layers and builder (helpers/papers/vit.py) against NumPy references."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from helpers import papers
from helpers.harness.parameters import Parameters
from helpers.papers.vit import (
    DEFAULTS,
    PatchEncoder,
    Patches,
    attention_scores,
    build_vit,
    mean_attention_distance,
    transformer_block,
)


def small(**values):
    """The ViT notebook's defaults with ``values`` changed."""
    return Parameters({**DEFAULTS, **values})


def numpy_patches(images, p):
    n, h, w, c = images.shape
    grid = images.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, (h // p) * (w // p), p * p * c)


@pytest.mark.parametrize("size,p", [(12, 3), (12, 4), (72, 6), (32, 8)])
def test_patches_match_a_numpy_reshape(size, p):
    images = np.random.default_rng(p).normal(size=(2, size, size, 3)).astype("float32")
    out = ops.convert_to_numpy(Patches(p)(images))
    np.testing.assert_allclose(out, numpy_patches(images, p), atol=1e-6)


def test_patch_encoder_is_a_projection_plus_a_position_table():
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(2, 9, 12)).astype("float32")
    encoder = PatchEncoder(num_patches=9, projection_dim=5)
    out = ops.convert_to_numpy(encoder(patches))
    kernel, bias = (ops.convert_to_numpy(w) for w in encoder.projection.weights)
    table = ops.convert_to_numpy(encoder.position_embedding)
    assert table.shape == (9, 5)
    np.testing.assert_allclose(out, patches @ kernel + bias + table, rtol=1e-5, atol=1e-5)


def test_layers_round_trip_through_their_config():
    assert Patches.from_config(Patches(6).get_config()).patch_size == 6
    config = PatchEncoder(144, 64).get_config()
    assert (config["num_patches"], config["projection_dim"]) == (144, 64)


def test_transformer_block_keeps_the_token_shape_and_uses_a_given_attention():
    tokens = keras.Input((16, 8))
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, name="custom")
    model = keras.Model(tokens, transformer_block(tokens, 2, 4, [16, 8], 0.0, attention=attention))
    assert model.output_shape == (None, 16, 8)
    assert model.get_layer("custom") is attention


def test_full_size_model_has_the_parameter_count_of_the_recipe():
    """CIFAR-100 defaults: 72 px, patch 6, 8 x 64-dim blocks, 4 heads, head 2048/1024."""
    x = np.zeros((4, 32, 32, 3), np.uint8)
    model = build_vit(Parameters(DEFAULTS), x, 100)
    d, n, patch_dim = 64, 144, 6 * 6 * 3
    attention = 3 * (d * 4 * d + 4 * d) + (4 * d * d + d)
    block = 2 * 2 * d + attention + (d * 2 * d + 2 * d) + (2 * d * d + d)
    head = (n * d * 2048 + 2048) + (2048 * 1024 + 1024) + (1024 * 100 + 100)
    expected = 7 + (patch_dim * d + d + n * d) + 8 * block + 2 * d + head
    assert model.count_params() == expected  # 21,759,019
    assert model.output_shape == (None, 100)


def test_the_number_of_classes_follows_the_argument():
    x = np.zeros((4, 32, 32, 3), np.uint8)
    p = small(image_size=32, patch_size=8, projection_dim=16, num_heads=2,
              transformer_layers=1, mlp_head_units=[32])
    model = build_vit(p, x, 7)
    logits = model(x.astype("float32"), training=False)
    assert tuple(logits.shape) == (4, 7)


def test_the_builder_completes_partial_parameters_with_the_notebooks_defaults():
    x = np.zeros((2, 32, 32, 3), np.uint8)
    model = papers.build("vit", {"transformer_layers": 1, "mlp_head_units": [8]}, x, 10)
    blocks = [l for l in model.layers if isinstance(l, keras.layers.MultiHeadAttention)]
    assert len(blocks) == 1 and model.input_shape == (None, 32, 32, 3)
    assert model.get_layer(index=-1).units == 10


def test_attention_scores_are_one_distribution_per_query_and_layer():
    x = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype("uint8")
    p = small(image_size=16, patch_size=4, projection_dim=8, num_heads=2,
              transformer_layers=3, mlp_head_units=[16])
    model = build_vit(p, x, 4)
    scores = attention_scores(model, x.astype("float32"))
    assert len(scores) == 3
    for layer_scores in scores:
        assert layer_scores.shape == (3, 2, 16, 16)
        np.testing.assert_allclose(layer_scores.sum(axis=-1), 1.0, atol=1e-5)


def test_mean_attention_distance_matches_a_loop_over_patch_pairs():
    grid, p = 3, 4
    scores = np.random.default_rng(1).dirichlet(np.ones(9), size=(2, 2, 9))  # (batch, heads, 9, 9)
    expected = np.zeros(2)
    for head in range(2):
        total = 0.0
        for b in range(2):
            for q in range(9):
                for k in range(9):
                    dy, dx = (q // grid - k // grid) * p, (q % grid - k % grid) * p
                    total += scores[b, head, q, k] * np.hypot(dy, dx)
        expected[head] = total / (2 * 9)
    np.testing.assert_allclose(mean_attention_distance(scores, grid, p), expected)
    # A head that only attends to itself looks 0 pixels away.
    identity = np.broadcast_to(np.eye(9), (1, 1, 9, 9))
    assert mean_attention_distance(identity, grid, p) == pytest.approx([0.0])


def _one_step_on(optimizer, weight):
    """``weight`` after one step of ``optimizer`` with a zero gradient (Adam's own step is 0)."""
    variable = keras.Variable(np.array(weight, dtype="float32"))
    gradient = ops.convert_to_tensor(np.zeros(np.shape(weight), dtype="float32"))
    optimizer.apply_gradients([(gradient, variable)])
    return ops.convert_to_numpy(variable)


def test_the_default_optimizer_decays_each_weight_by_the_sources_per_step_factor():
    """The Keras example's TF Addons AdamW: w <- w - 1e-4 * w each step, at any learning rate."""
    assert DEFAULTS["weight_decay_mode"] == "per_step" and DEFAULTS["weight_decay"] == 1e-4
    weight = np.array([[2.0, -1.0], [0.5, 4.0]])
    np.testing.assert_allclose(_one_step_on(papers.optimizer("vit"), weight),
                               weight * (1 - 1e-4), rtol=1e-6)


def test_the_lr_scaled_mode_decays_by_the_learning_rate_times_the_decay():
    weight = np.array([2.0, -1.0, 0.5])
    optimizer = papers.optimizer("vit", {"weight_decay_mode": "lr_scaled", "weight_decay": 0.1})
    np.testing.assert_allclose(_one_step_on(optimizer, weight), weight * (1 - 1e-3 * 0.1),
                               rtol=1e-6)


def numpy_layer_norm(x, gamma, beta, epsilon=1e-6):
    mean, variance = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def numpy_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def numpy_self_attention(x, wq, bq, wk, bk, wv, bv, wo, bo):
    """Multi-head self-attention with per-head kernels (width, heads, key_dim)."""
    q, k, v = (np.einsum("btd,dhk->bhtk", x, w) + b[:, None]
               for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    logits = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.einsum("bhtk,hkd->btd", weights @ v, wo) + bo


def test_transformer_block_matches_a_numpy_pre_norm_block():
    """x + MSA(LN(x)), then x + MLP(LN(x)) with GELU after both dense layers (the Keras example's)."""
    rng = np.random.default_rng(5)
    tokens = keras.Input((6, 8))
    model = keras.Model(tokens, transformer_block(tokens, 2, 8, [16, 8], 0.0))
    for variable in model.weights:
        variable.assign(0.5 * rng.normal(size=variable.shape).astype("float32"))
    norm_1, norm_2 = ([ops.convert_to_numpy(w) for w in l.weights] for l in model.layers
                      if isinstance(l, keras.layers.LayerNormalization))
    attention = next(l for l in model.layers if isinstance(l, keras.layers.MultiHeadAttention))
    attention_weights = [ops.convert_to_numpy(w) for dense in (
        attention.query_dense, attention.key_dense, attention.value_dense, attention.output_dense)
        for w in dense.weights]
    mlp_weights = [[ops.convert_to_numpy(w) for w in l.weights] for l in model.layers
                   if isinstance(l, keras.layers.Dense)]

    x = rng.normal(size=(3, 6, 8)).astype("float32")
    expected = x + numpy_self_attention(numpy_layer_norm(x, *norm_1), *attention_weights)
    h = numpy_layer_norm(expected, *norm_2)
    for kernel, bias in mlp_weights:
        h = numpy_gelu(h @ kernel + bias)
    expected = expected + h
    np.testing.assert_allclose(ops.convert_to_numpy(model(x)), expected, rtol=1e-5, atol=1e-5)
