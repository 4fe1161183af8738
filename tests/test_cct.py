"""The CCT notebook: its exported layers and builder (helpers/papers/cct.py) against
NumPy references, its parameter checks, and its smoke run on the built site."""

import ast
import math

import keras
import nbformat
import numpy as np
import papermill
import pytest
from bs4 import BeautifulSoup
from keras import layers, ops

from helpers import papers
from helpers.harness.parameters import Parameters
from helpers.harness.records import read_record
from helpers.harness.train import PerStepAdamW
from helpers.papers.cct import (
    DEFAULTS,
    POOLINGS,
    CCTTokenizer,
    ClassToken,
    PositionEmbedding,
    SequencePooling,
    build_cct,
    cct_augmentation,
    cct_block,
    checked_token_grid,
    drop_path_rates,
    sequence_pooling_weights,
    token_grid,
)
from helpers.papers.layers import StochasticDepth

from conftest import (ROOT, assert_stops_before_loading_data, executed_notebook, shown_records,
                      start_cell_namespace)

NOTEBOOK = ROOT / "book" / "cct.ipynb"


def small(**values):
    """The CCT notebook's defaults with ``values`` changed."""
    return Parameters({**DEFAULTS, **values})


def uint8_images(n, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype="uint8")


# --- NumPy references ----------------------------------------------------------------


def numpy_conv_valid(x, kernel):
    """Unpadded stride-1 convolution (cross-correlation) of (n, h, w, c) by (k, k, c, o)."""
    k = kernel.shape[0]
    n, h, w, _ = x.shape
    out = np.zeros((n, h - k + 1, w - k + 1, kernel.shape[-1]))
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            out[:, i, j] = np.tensordot(x[:, i:i + k, j:j + k, :], kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def numpy_max_pool_same(x, size, stride):
    """Max-pooling with "same" padding: ceil(side / stride) outputs, extra padding at the end."""
    n, h, w, c = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + size - h, 0)
    pad_w = max((out_w - 1) * stride + size - w, 0)
    padded = np.full((n, h + pad_h, w + pad_w, c), -np.inf)
    padded[:, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w] = x
    out = np.empty((n, out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, i * stride:i * stride + size, j * stride:j * stride + size]
            out[:, i, j] = window.max(axis=(1, 2))
    return out


def numpy_tokenizer(images, kernels):
    x = images.astype("float64")
    for kernel in kernels:
        x = np.maximum(numpy_conv_valid(x, kernel), 0.0)
        x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        x = numpy_max_pool_same(x, 3, 2)
    n, h, w, c = x.shape
    return x.reshape(n, h * w, c)


def numpy_layer_norm(x, gamma, beta, epsilon=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=-1, keepdims=True) + epsilon) * gamma + beta


def numpy_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def numpy_self_attention(x, w):
    """Heads of key size d, each with its own query, key and value maps and its own
    slice of the output map (Keras's MultiHeadAttention weight layout)."""
    out = w["output"][1]
    for h in range(w["query"][0].shape[1]):
        q, k, v = (x @ w[name][0][:, h] + w[name][1][h] for name in ("query", "key", "value"))
        scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        out = out + (scores / scores.sum(axis=-1, keepdims=True)) @ v @ w["output"][0][h]
    return out


def numpy_cct_block(x, w, rate=0.0, kept=(True, True)):
    """The Keras example's pre-norm block: x + drop(MSA(LN(x))), x + drop(MLP(LN(x)))."""
    scale = [1 / (1 - rate) if k else 0.0 for k in kept]
    x = x + scale[0] * numpy_self_attention(numpy_layer_norm(x, *w["norms"][0]), w)
    h = numpy_layer_norm(x, *w["norms"][1])
    for kernel, bias in w["mlp"]:
        h = numpy_gelu(h @ kernel + bias)
    return x + scale[1] * h


def numpy_sequence_pooling(x, g, b):
    scores = x @ g + b
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights = scores / scores.sum(axis=1, keepdims=True)
    return np.einsum("bn,bnd->bd", weights, x), weights


# --- Tokenizer -----------------------------------------------------------------------


@pytest.mark.parametrize("height,width,channels", [
    (12, 12, [4, 5]), (11, 9, [3, 4]), (8, 8, [6]), (11, 10, [4, 6]), (32, 32, [8, 16]),
])
def test_tokenizer_matches_numpy_conv_relu_pad_maxpool_read_row_by_row(height, width, channels):
    images = np.random.default_rng(height).normal(size=(2, height, width, 3)).astype("float32")
    tokenizer = CCTTokenizer(channels)
    tokens = ops.convert_to_numpy(tokenizer(images))
    kernels = [ops.convert_to_numpy(stage.layers[0].kernel) for stage in tokenizer.stages]
    np.testing.assert_allclose(tokens, numpy_tokenizer(images, kernels), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("height,width,conv_layers,expected", [
    (32, 32, 1, (16, 16)), (32, 32, 2, (8, 8)), (32, 32, 4, (2, 2)), (28, 20, 2, (7, 5)),
    (72, 72, 3, (9, 9)),
])
def test_token_grid_is_the_shape_of_the_tokenizer_output(height, width, conv_layers, expected):
    assert token_grid(height, width, conv_layers) == expected
    tokenizer = CCTTokenizer([4] * conv_layers)
    maps = tokenizer.feature_maps(np.zeros((1, height, width, 3), "float32"))
    assert tuple(maps[-1].shape[1:3]) == expected
    assert tuple(tokenizer(np.zeros((1, height, width, 3), "float32")).shape) == (
        1, expected[0] * expected[1], 4)


def test_token_grid_is_empty_when_a_stage_gets_less_than_the_kernel():
    assert token_grid(32, 32, 5) == (0, 0)  # 32 -> 16 -> 8 -> 4 -> 2, then a 3x3 kernel
    assert token_grid(2, 32, 1) == (0, 0)


def test_checked_token_grid_names_the_parameter_when_the_stages_leave_no_tokens():
    assert checked_token_grid(32, 32, 4) == (2, 2)
    with pytest.raises(ValueError) as failure:
        checked_token_grid(32, 32, 5)
    assert "parameter conv_layers must leave a map of at least 3x3 pixels" in str(failure.value)
    assert "5 stages are too many for 32x32 images" in str(failure.value)
    with pytest.raises(ValueError, match="parameter conv_layers must be > 0, got 0"):
        checked_token_grid(32, 32, 0)


# --- Position embedding, stochastic depth, block ---------------------------------------


def test_position_embedding_adds_one_learned_vector_per_token():
    tokens = np.random.default_rng(0).normal(size=(3, 64, 50)).astype("float32")
    keras.utils.set_random_seed(0)
    layer = PositionEmbedding()
    out = ops.convert_to_numpy(layer(tokens))
    table = ops.convert_to_numpy(layer.position_embedding)
    assert table.shape == (64, 50)
    # A normal of standard deviation 0.2 truncated at two of them: every value within
    # 0.4, and a standard deviation of 0.2 * 0.880 = 0.176 (3,200 draws: +-0.003).
    assert np.abs(table).max() <= 0.4
    assert abs(table.std() - 0.176) < 0.015 and abs(table.mean()) < 0.015
    np.testing.assert_allclose(out, tokens + table[None], rtol=1e-6)
    assert PositionEmbedding.from_config(PositionEmbedding(0.5).get_config()).stddev == 0.5


@pytest.mark.parametrize("rate,layers,expected", [
    (0.1, 2, [0.0, 0.1]), (0.1, 5, [0.0, 0.025, 0.05, 0.075, 0.1]), (0.3, 1, [0.0]),
])
def test_drop_path_rates_rise_linearly_from_zero_to_the_rate(rate, layers, expected):
    np.testing.assert_allclose(drop_path_rates(rate, layers), expected, atol=1e-12)


def test_cct_block_drops_both_branches_for_a_quarter_of_the_images_at_rate_one_half():
    batch = 4000
    tokens = np.random.default_rng(1).normal(size=(batch, 4, 8)).astype("float32")
    inputs = keras.Input((4, 8))
    block = keras.Model(inputs, cct_block(inputs, 2, 8, [16, 8], 0.0, 0.5, seed=3))
    assert [layer.rate for layer in block.layers if isinstance(layer, StochasticDepth)] == [0.5, 0.5]
    trained = ops.convert_to_numpy(block(tokens, training=True))
    untouched = np.all(trained == tokens, axis=(1, 2))
    # Both branches dropped, probability 0.5 * 0.5; Binomial(4000, 0.25) sd is 0.0068.
    assert abs(untouched.mean() - 0.25) < 0.03, untouched.mean()
    first = ops.convert_to_numpy(block(tokens, training=False))
    np.testing.assert_array_equal(first, ops.convert_to_numpy(block(tokens, training=False)))
    assert not np.all(first == tokens, axis=(1, 2)).any()


def random_block(rate, seed=0):
    """A tiny cct_block (5 tokens of 6, 2 heads, MLP 8 -> 6, no dropout) with every weight
    random, and its weights in NumPy for ``numpy_cct_block``."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((5, 6))
    block = keras.Model(inputs, cct_block(inputs, 2, 6, [8, 6], 0.0, rate, seed=seed))
    for variable in block.weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))

    def numpy_weights(layer):
        return [ops.convert_to_numpy(v) for v in layer.weights]

    attention = next(l for l in block.layers if isinstance(l, layers.MultiHeadAttention))
    weights = {
        "norms": [numpy_weights(l) for l in block.layers
                  if isinstance(l, layers.LayerNormalization)],
        "mlp": [numpy_weights(l) for l in block.layers if isinstance(l, layers.Dense)],
        "query": numpy_weights(attention.query_dense), "key": numpy_weights(attention.key_dense),
        "value": numpy_weights(attention.value_dense),
        "output": numpy_weights(attention.output_dense),
    }
    return block, weights


def test_cct_block_is_the_numpy_pre_norm_block_at_inference():
    block, weights = random_block(rate=0.3)
    tokens = np.random.default_rng(7).normal(size=(4, 5, 6)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(block(tokens, training=False)),
                               numpy_cct_block(tokens, weights), rtol=1e-5, atol=1e-5)


def test_cct_block_in_training_keeps_or_drops_each_branch_per_image_as_numpy_does():
    rate = 0.5
    block, weights = random_block(rate)
    tokens = np.random.default_rng(8).normal(size=(64, 5, 6)).astype("float32")
    trained = ops.convert_to_numpy(block(tokens, training=True))
    patterns = [(True, True), (True, False), (False, True), (False, False)]
    candidates = [numpy_cct_block(tokens, weights, rate, kept) for kept in patterns]
    seen = []
    for image, output in enumerate(trained):
        matches = [i for i, candidate in enumerate(candidates)
                   if np.allclose(output, candidate[image], rtol=1e-5, atol=1e-5)]
        assert len(matches) == 1, (image, matches)
        seen.append(matches[0])
    # Each pattern has probability 1/4: all four occur among 64 images but for 4 * 0.75^64.
    assert set(seen) == {0, 1, 2, 3}


def test_cct_block_without_drops_or_dropout_is_the_same_in_training_and_inference():
    tokens = np.random.default_rng(2).normal(size=(6, 4, 8)).astype("float32")
    inputs = keras.Input((4, 8))
    block = keras.Model(inputs, cct_block(inputs, 2, 8, [16, 8], 0.0, 0.0))
    np.testing.assert_allclose(ops.convert_to_numpy(block(tokens, training=True)),
                               ops.convert_to_numpy(block(tokens, training=False)), atol=1e-6)


# --- Sequence pooling ---------------------------------------------------------------


def test_sequence_pooling_matches_a_numpy_softmax_weighted_sum():
    tokens = np.random.default_rng(3).normal(size=(4, 7, 5)).astype("float32")
    pooling = SequencePooling()
    pooling.build(tokens.shape)
    pooling.attention.bias.assign(np.full((1,), 0.3, "float32"))
    kernel, bias = (ops.convert_to_numpy(w) for w in pooling.attention.weights)
    pooled, weights = (ops.convert_to_numpy(t) for t in pooling(tokens, return_weights=True))
    expected, expected_weights = numpy_sequence_pooling(tokens, kernel[:, 0], bias[0])
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(pooling(tokens)), pooled, rtol=1e-6)


def test_sequence_pooling_with_a_zero_scoring_vector_is_the_mean_of_the_tokens():
    tokens = np.random.default_rng(4).normal(size=(3, 9, 4)).astype("float32")
    pooling = SequencePooling()
    pooling.build(tokens.shape)
    pooling.attention.kernel.assign(np.zeros((4, 1), "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(pooling(tokens)), tokens.mean(axis=1),
                               rtol=1e-5, atol=1e-6)


def test_sequence_pooling_ignores_the_order_of_the_tokens():
    tokens = np.random.default_rng(5).normal(size=(2, 6, 3)).astype("float32")
    pooling = SequencePooling()
    shuffled = tokens[:, np.random.default_rng(6).permutation(6)]
    np.testing.assert_allclose(ops.convert_to_numpy(pooling(shuffled)),
                               ops.convert_to_numpy(pooling(tokens)), rtol=1e-5, atol=1e-6)


# --- Augmentation -------------------------------------------------------------------


def test_augmentation_rescales_and_at_inference_returns_the_image():
    x = uint8_images(4, 12, 12).astype("float32")
    pipeline = cct_augmentation(small(crop_padding=2, seed=0))
    assert [layer.name for layer in pipeline.layers] == ["rescaling", "random_pad_crop",
                                                         "random_flip"]
    np.testing.assert_allclose(ops.convert_to_numpy(pipeline(x, training=False)), x / 255,
                               rtol=1e-6)
    shifted = ops.convert_to_numpy(pipeline(x, training=True))
    assert shifted.shape == x.shape and shifted.min() >= 0 and shifted.max() <= 1


def test_augmentation_flip_none_means_no_flip_layer():
    pipeline = cct_augmentation(small(flip="none", crop_padding=0))
    assert [layer.name for layer in pipeline.layers] == ["rescaling"]


# --- Whole model --------------------------------------------------------------------


def test_default_model_has_the_parameter_count_of_the_recipe():
    """CIFAR-10 defaults: 64 + 128 channels, 64 tokens of 128, 2 blocks of 2 full-width heads."""
    model = build_cct(Parameters(DEFAULTS), uint8_images(1, 32, 32), 10)
    d = 128
    tokenizer = 3 * 3 * 3 * 64 + 3 * 3 * 64 * d
    position = 64 * d
    attention = 3 * (d * 2 * d + 2 * d) + (2 * d * d + d)  # key size d per head
    block = 2 * 2 * d + attention + 2 * (d * d + d)
    head = 2 * d + (d + 1) + (d * 10 + 10)
    assert model.count_params() == tokenizer + position + 2 * block + head == 416_331
    assert model.output_shape == (None, 10)


def test_position_embedding_costs_one_vector_per_token():
    with_embedding = papers.build("cct")
    without = papers.build("cct", {"positional_emb": False})
    assert with_embedding.count_params() - without.count_params() == 64 * 128


def test_builder_follows_the_parameters_and_the_images():
    p = small(conv_layers=1, conv_channels=4, projection_dim=8, num_heads=1,
              transformer_layers=3, transformer_units=[16, 8], stochastic_depth_rate=0.2)
    model = build_cct(p, uint8_images(2, 20, 12), 7)
    assert model.input_shape == (None, 20, 12, 3) and model.output_shape == (None, 7)
    assert model.get_layer("tokenizer").num_output_channels == [8]
    assert tuple(model.get_layer("tokenizer").output.shape) == (None, 10 * 6, 8)
    rates = [layer.rate for layer in model.layers if isinstance(layer, StochasticDepth)]
    np.testing.assert_allclose(rates, [0.0, 0.0, 0.1, 0.1, 0.2, 0.2])
    assert model.get_layer("augmentation").layers[0].name == "rescaling"


def test_builder_rejects_widths_that_cannot_be_added_and_too_many_stages():
    with pytest.raises(ValueError,
                       match="parameter transformer_units must end with projection_dim=128"):
        papers.build("cct", {"transformer_units": [128, 64]})
    with pytest.raises(ValueError) as failure:
        papers.build("cct", {"conv_layers": 5})
    assert "parameter conv_layers must leave a map of at least 3x3 pixels" in str(failure.value)
    assert "5 stages are too many for 32x32 images" in str(failure.value)


def test_model_round_trips_through_a_keras_file(tmp_path):
    model = build_cct(
        small(crop_padding=2, seed=0, conv_channels=4, projection_dim=8, num_heads=2,
              transformer_layers=2, transformer_units=[8, 8]),
        uint8_images(1, 16, 16), 4,
    )
    path = tmp_path / "cct.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = np.random.default_rng(0).uniform(0, 255, size=(3, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images, training=False)),
                               ops.convert_to_numpy(model(images, training=False)), atol=1e-5)
    assert loaded.get_layer("tokenizer").num_output_channels == [4, 8]


def test_the_class_token_is_prepended_and_the_tokens_pass_unchanged():
    tokens = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
    layer = ClassToken()
    layer.build(tokens.shape)
    learned = np.arange(4, dtype="float32").reshape(1, 1, 4)
    layer.token.assign(learned)
    out = ops.convert_to_numpy(layer(tokens))
    assert out.shape == (3, 6, 4)
    np.testing.assert_array_equal(out[:, 1:], tokens)
    np.testing.assert_array_equal(out[:, 0], np.repeat(learned[0], 3, axis=0))


def test_each_pooling_reads_the_tokens_its_own_way():
    images = uint8_images(2, 16, 16)
    keras.utils.set_random_seed(0)
    models = {pooling: build_cct(small(pooling=pooling, conv_layers=1, projection_dim=8,
                                       transformer_units=[8], transformer_layers=1), images, 3)
              for pooling in POOLINGS}
    names = {pooling: {layer.name for layer in model.layers} for pooling, model in models.items()}
    assert "sequence_pooling" in names["sequence"] and "class_token" not in names["sequence"]
    assert "class_token" in names["class_token"] and "sequence_pooling" not in names["class_token"]
    assert "average_pooling" in names["average"]
    # The class token adds one vector of width projection_dim; average pooling drops the
    # sequence pooling's scoring layer (8 weights and a bias).
    counts = {pooling: model.count_params() for pooling, model in models.items()}
    assert counts["class_token"] - counts["average"] == 8
    assert counts["sequence"] - counts["average"] == 9
    for model in models.values():
        assert model(images, training=False).shape == (2, 3)


def test_average_pooling_is_the_mean_of_the_final_normed_tokens():
    images = uint8_images(2, 16, 16)
    model = build_cct(small(pooling="average", conv_layers=1, projection_dim=8,
                            transformer_units=[8], transformer_layers=1), images, 3)
    probe = keras.Model(model.input, model.get_layer("final_norm").output)
    tokens = ops.convert_to_numpy(probe(images, training=False))
    kernel, bias = (ops.convert_to_numpy(w) for w in model.get_layer("logits").weights)
    np.testing.assert_allclose(ops.convert_to_numpy(model(images, training=False)),
                               tokens.mean(axis=1) @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_a_model_without_sequence_pooling_has_no_pooling_weights_to_read():
    images = uint8_images(2, 16, 16)
    model = build_cct(small(pooling="average", conv_layers=1, projection_dim=8,
                            transformer_units=[8], transformer_layers=1), images, 3)
    with pytest.raises(ValueError, match="no SequencePooling layer"):
        sequence_pooling_weights(model, images.astype("float32"))


def test_an_unknown_pooling_is_refused_by_the_builder():
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_cct(small(pooling="max"), uint8_images(1, 32, 32), 3)


def test_sequence_pooling_weights_of_a_model_sum_to_one_over_its_token_grid():
    model = build_cct(small(conv_channels=4, projection_dim=8, transformer_units=[8, 8]),
                      uint8_images(1, 16, 16), 3)
    images = np.random.default_rng(0).uniform(0, 1, size=(5, 16, 16, 3)).astype("float32")
    weights = sequence_pooling_weights(model, images, batch_size=2)
    assert weights.shape == (5, 4 * 4)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


# --- Optimizer ------------------------------------------------------------------------


@pytest.mark.parametrize("mode,factor", [("lr_scaled", 1 - 0.1 * 0.01), ("per_step", 1 - 0.01)])
def test_weight_decay_mode_sets_how_much_one_step_decays_a_weight(mode, factor):
    """A zero gradient leaves Adam's own update at 0: only the decay moves the weight."""
    optimizer = papers.optimizer("cct", {"learning_rate": 0.1, "weight_decay": 0.01,
                                         "weight_decay_mode": mode})
    assert isinstance(optimizer, PerStepAdamW) == (mode == "per_step")
    weight = keras.Variable(np.full((3,), 2.0, "float32"))
    optimizer.apply_gradients([(ops.zeros((3,)), weight)])
    np.testing.assert_allclose(ops.convert_to_numpy(weight), 2.0 * factor, rtol=1e-6)


# --- The notebook -------------------------------------------------------------------


def notebook_defaults(path):
    declared = papermill.inspect_notebook(str(path))
    return {name: ast.literal_eval(info["default"]) for name, info in declared.items()}


def test_cct_defaults_are_the_source_recipe_and_the_generated_defaults():
    defaults = notebook_defaults(NOTEBOOK)
    assert defaults | {
        "dataset": "cifar10", "epochs": 30, "batch_size": 128, "learning_rate": 1e-3,
        "weight_decay": 1e-4, "weight_decay_mode": "lr_scaled", "label_smoothing": 0.1,
        "crop_padding": 4, "flip": "horizontal",
        "conv_layers": 2, "conv_channels": 64, "projection_dim": 128, "num_heads": 2,
        "transformer_layers": 2, "transformer_units": [128, 128], "positional_emb": True,
        "stochastic_depth_rate": 0.1, "dropout_rate": 0.1, "lr_schedule": "constant",
        "pooling": "sequence",  # the paper's sequence pooling
    } == defaults
    assert dict(papers.defaults("cct")) == defaults  # helpers/papers/cct.py is not stale


def test_the_compactness_cell_builds_both_models_from_their_notebooks_defaults():
    """No copy of another notebook's defaults: the ViT comes from helpers.papers.vit's
    DEFAULTS, the CCT from this notebook's parameters cell as written (run.defaults)."""
    cell = next(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                if "default_cct = " in c.source)
    assert 'papers.build("vit", {"dataset": "cifar10"})' in cell
    assert "build_cct(run.defaults," in cell
    assert not [node for node in ast.walk(ast.parse(cell)) if isinstance(node, ast.Dict)
                and any(getattr(key, "value", None) == "image_size" for key in node.keys)]


def test_run_defaults_are_the_parameters_cell_whatever_papermill_injected():
    namespace = start_cell_namespace(NOTEBOOK, {
        "dataset": "digits", "n_train": 100, "n_test": 20, "projection_dim": 32,
        "transformer_units": [32, 32],
    })
    run = namespace["run"]
    assert run.p.projection_dim == 32 and run.p.dataset == "digits"
    assert dict(run.defaults) == notebook_defaults(NOTEBOOK)


def test_the_notebook_checks_the_token_grid_before_its_first_tokenizer():
    """Too many stages for the images fail with the parameter named, not in Keras."""
    cells = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
             if c.cell_type == "code" and not c.source.startswith("# @save")]
    first = next(source for source in cells if "CCTTokenizer(" in source)
    assert first.index("checked_token_grid(") < first.index("CCTTokenizer(")


@pytest.mark.parametrize("parameters,message", [
    ({"stochastic_depth_rate": 1.0}, "parameter stochastic_depth_rate must be in [0, 1), got 1.0"),
    ({"epochs": 0}, "parameter epochs must be > 0, got 0"),
    ({"learning_rate": -0.001}, "parameter learning_rate must be > 0, got -0.001"),
    ({"num_heads": "two"}, "parameter num_heads must be an integer, got 'two'"),
    ({"transformer_units": [128, 64]},
     "parameter transformer_units must end with projection_dim=128"),
    ({"transformer_units": []}, "parameter transformer_units must end with projection_dim=128"),
    ({"flip": "diagonal"}, "parameter flip must be one of 'horizontal', 'vertical', "
                           "'horizontal_and_vertical', 'none', got 'diagonal'"),
    ({"crop_padding": -1}, "parameter crop_padding must be >= 0, got -1"),
    ({"pooling": "max"}, "parameter pooling must be one of 'sequence', 'class_token', "
                         "'average', got 'max'"),
    ({"label_smoothing": 1.0}, "parameter label_smoothing must be in [0, 1), got 1.0"),
    ({"weight_decay_mode": "per_epoch"},
     "parameter weight_decay_mode must be one of 'lr_scaled', 'per_step', got 'per_epoch'"),
    ({"position_embedding": False},
     "parameter position_embedding is not declared by this notebook: did you mean "
     "positional_emb?"),
])
def test_bad_parameters_stop_the_cct_notebook_at_once(parameters, message, monkeypatch):
    assert_stops_before_loading_data(NOTEBOOK, parameters, message, monkeypatch)


# --- The smoke run on the built site (slow) ---------------------------------------------


@pytest.mark.slow
def test_cct_smoke_run_learns_well_above_chance(smoke_build):
    record = read_record(smoke_build["site"] / "book" / "results" / "cct.json")
    assert record["dataset"] == "digits" and record["backend"] == "tensorflow"
    assert record["epochs"] == record["parameters"]["epochs"] == 10
    # 10 classes: chance is 10%.
    assert record["test_top1"] > 0.75, record["test_top1"]
    assert record["history"]["loss"][-1] < record["history"]["loss"][0]
    assert record["default_parameter_count"] == 416_331
    assert record["vit_default_parameter_count"] > 50 * record["default_parameter_count"]
    assert record["num_tokens"] == 64 and 1 <= record["pooling_effective_tokens"] <= 64
    print(f"CCT smoke: top-1 {record['test_top1']:.2%}, notebook "
          f"{smoke_build['seconds']['cct']:.0f} s, training {record['train_seconds']:.0f} s")


@pytest.mark.slow
def test_cct_executed_notebook_has_its_figures_and_no_errors(smoke_build):
    nb = executed_notebook(smoke_build, "cct")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # augmentation, parameter counts, curves, feature maps, pooling heatmaps
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    text = "".join(o.get("text", "") for o in outputs)
    assert "Epoch 10/10" in text and "\r" not in text
    assert "pooling weights of all 360 test images sum to 1" in text


@pytest.mark.slow
def test_cct_page_has_its_figures_and_glued_numbers(smoke_build):
    html_dir = smoke_build["site"] / "_build" / "html" / "book"
    page = BeautifulSoup((html_dir / "cct.html").read_text(), "html.parser")
    assert "Compact Convolutional Transformer (CCT)" in page.title.text
    assert len([img for img in page.find_all("img") if "_images/" in img["src"]]) >= 5
    record = shown_records(smoke_build)["cct"]
    text = " ".join(page.get_text().split())
    assert f"reached {round(100 * record['test_top1'], 2)}% top-1" in text
    assert f"{record['parameter_count']:,} parameters" in text
    assert f"the CCT has {record['default_parameter_count']:,} parameters" in text
    assert f"{record['vit_default_parameter_count']:,} of the ViT notebook" in text
