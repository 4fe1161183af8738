"""The Perceiver notebook: its exported layers and builder (helpers/papers/perceiver.py), its
parameter checks and its smoke run."""

import ast
import math

import keras
import numpy as np
import papermill
import pytest
from keras import ops
from scipy.special import erf

import helpers.harness.data
from helpers import papers
from helpers.harness.augment import augmentation_pipeline
from helpers.harness.parameters import Parameters
from helpers.harness.run import dtype_policy
from helpers.papers.perceiver import (
    CrossAttention,
    FeedForward,
    FourierFeatures,
    FourierPatchEncoder,
    LatentArray,
    LatentTransformerBlock,
    Perceiver,
    build_perceiver,
    optimizer_factory,
)

from conftest import (ROOT, assert_stops_before_loading_data, executed_notebook, shown_records,
                      start_cell_namespace)

NOTEBOOK = ROOT / "book" / "perceiver.ipynb"


def numpy(x):
    return ops.convert_to_numpy(x)


def randomize(layer, seed=0):
    """Give every weight of ``layer`` random values, so that each must be in its place."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))


def layer_norm(x, gamma, beta, epsilon=1e-6):
    normalized = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + epsilon)
    return normalized * gamma + beta


TINY = dict(image_size=16, patch_size=4, num_latents=6, projection_dim=8, num_heads=2,
            num_transformer_blocks=1, num_iterations=2, cross_attention_heads=2, num_bands=3)


def tiny_classifier(images=None, **overrides):
    """A tiny Perceiver for 5 classes of 16 px images, through the notebook's own builder."""
    images = np.zeros((2, 16, 16, 3), np.uint8) if images is None else images
    return papers.build("perceiver", {**TINY, **overrides}, x_train=images, num_classes=5)


# Fourier features


def reference_fourier_features(grid, bands):
    """Paper: per axis [x, sin(pi f_k x), cos(pi f_k x)], f_k from 1 to grid/2, x in [-1, 1]."""
    features = np.zeros((grid * grid, 2 * (2 * bands + 1)))
    step = (grid / 2 - 1) / (bands - 1) if bands > 1 else 0.0
    frequencies = [1.0 + k * step for k in range(bands)]
    for token in range(grid * grid):
        column = 0
        for index in divmod(token, grid):  # row, then column
            x = -1.0 + 2.0 * index / (grid - 1)
            values = [x] + [math.sin(math.pi * f * x) for f in frequencies]
            values += [math.cos(math.pi * f * x) for f in frequencies]
            features[token, column:column + len(values)] = values
            column += len(values)
    return features


@pytest.mark.parametrize("grid,bands", [(2, 1), (4, 3), (8, 5)])
def test_fourier_features_are_the_papers_sines_and_cosines_of_row_and_column(grid, bands):
    tokens = np.random.default_rng(grid).normal(size=(3, grid * grid, 2)).astype("float32")
    out = numpy(FourierFeatures(grid, bands)(tokens))
    assert out.shape == (3, grid * grid, 2 + 2 * (2 * bands + 1))
    np.testing.assert_allclose(out[..., :2], tokens)
    for image in out[..., 2:]:
        np.testing.assert_allclose(image, reference_fourier_features(grid, bands), atol=1e-5)


def test_highest_fourier_band_is_the_nyquist_frequency_of_the_grid():
    # At f = grid / 2 the feature's phase moves by about pi from one input to the next.
    grid, bands = 16, 4
    encoding = numpy(FourierFeatures(grid, bands).encoding()).reshape(grid, grid, -1)
    sine_of_last_band_along_columns = encoding[0, :, (2 * bands + 1) + bands]
    x = np.linspace(-1, 1, grid)
    np.testing.assert_allclose(sine_of_last_band_along_columns, np.sin(np.pi * grid / 2 * x),
                               atol=1e-5)


def round_to_bfloat16(x):
    """``x`` rounded to bfloat16's 8 significant bits, in NumPy."""
    mantissa, exponent = np.frexp(x)
    return np.ldexp(np.round(mantissa * 2**8) / 2**8, exponent)


def test_fourier_features_under_mixed_bfloat16_are_float32_features_rounded_once():
    """The full-size grid (64 px images in 2 px patches: 32 x 32, bands up to f = 16).
    Computed in float32, each feature is off by at most one bfloat16 rounding (2**-9 of
    a value in [-1, 1]); from angles rounded to bfloat16 (spacing 0.25 near pi * 16),
    the sines and cosines would be off by up to 0.12."""
    grid, bands = 32, 64
    tokens = np.zeros((1, grid * grid, 2), "float32")
    with dtype_policy("mixed_bfloat16"):
        layer = FourierFeatures(grid, bands)
    features = layer(tokens)
    assert keras.backend.standardize_dtype(features.dtype) == "bfloat16"
    features = numpy(ops.cast(features, "float32"))[0, :, 2:]
    exact = reference_fourier_features(grid, bands)
    assert np.abs(features - exact).max() <= 2.0**-9

    x = np.linspace(-1, 1, grid)[:, None]
    frequencies = np.linspace(1, grid / 2, bands)[None, :]
    rounded_angles = round_to_bfloat16(round_to_bfloat16(np.pi * frequencies) * x)
    assert np.abs(np.sin(rounded_angles) - np.sin(np.pi * frequencies * x)).max() > 0.1


def test_fourier_patch_encoder_projects_patches_with_their_features():
    patches = np.random.default_rng(1).normal(size=(2, 9, 4)).astype("float32")
    encoder = FourierPatchEncoder(grid_size=3, num_bands=2, projection_dim=5)
    out = numpy(encoder(patches))
    kernel, bias = (numpy(w) for w in encoder.projection.weights)
    features = np.concatenate(
        [patches, np.broadcast_to(reference_fourier_features(3, 2), (2, 9, 10))], axis=-1
    )
    np.testing.assert_allclose(out, features @ kernel + bias, rtol=1e-4, atol=1e-5)


# Latents and attention


def test_latent_array_gives_every_image_the_same_learned_latents():
    data = np.zeros((3, 7, 2), "float32")
    array = LatentArray(num_latents=4, latent_dim=5)
    out = numpy(array(data))
    assert out.shape == (3, 4, 5)
    for image in out:
        np.testing.assert_array_equal(image, numpy(array.latents))


def reference_cross_attention(latents, data, layer, heads):
    weights = {name: [numpy(v) for v in getattr(layer, name).weights]
               for name in ("latent_norm", "data_norm", "query", "key", "value",
                            "output_projection")}
    width = latents.shape[-1]
    d = width // heads
    z, x = layer_norm(latents, *weights["latent_norm"]), layer_norm(data, *weights["data_norm"])

    def project(inputs, name):
        kernel, bias = weights[name]
        return inputs @ kernel.reshape(inputs.shape[-1], width) + bias.reshape(width)

    q, k, v = project(z, "query"), project(x, "key"), project(x, "value")
    mixed, attention = np.zeros_like(q), []
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        scores = np.einsum("bnk,bmk->bnm", q[..., part], k[..., part]) / np.sqrt(d)
        probabilities = np.exp(scores - scores.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        mixed[..., part] = probabilities @ v[..., part]
        attention.append(probabilities)
    kernel, bias = weights["output_projection"]
    return latents + mixed @ kernel.reshape(width, width) + bias, np.stack(attention, axis=1)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_cross_attention_matches_a_numpy_reference(heads):
    rng = np.random.default_rng(heads)
    latents = rng.normal(size=(2, 3, 8)).astype("float32")
    data = rng.normal(size=(2, 5, 6)).astype("float32")
    layer = CrossAttention(num_heads=heads)
    layer(latents, data)
    randomize(layer, seed=heads)
    out, weights = layer(latents, data, return_attention_scores=True)
    expected, expected_weights = reference_cross_attention(latents, data, layer, heads)
    np.testing.assert_allclose(numpy(out), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(numpy(weights), expected_weights, atol=1e-5)


def test_cross_attention_weights_are_one_distribution_over_the_inputs_per_latent():
    rng = np.random.default_rng(0)
    latents, data = rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 11, 4))
    _, weights = CrossAttention(num_heads=2)(latents, data, return_attention_scores=True)
    weights = numpy(weights)
    assert weights.shape == (2, 2, 3, 11)  # (batch, heads, latents, inputs)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)


def test_cross_attention_needs_heads_that_divide_the_width():
    with pytest.raises(ValueError, match="num_heads=3 must divide the latent width 8"):
        CrossAttention(num_heads=3)(np.zeros((1, 2, 8)), np.zeros((1, 4, 8)))


def test_feedforward_is_a_residual_two_layer_gelu_network():
    x = np.random.default_rng(2).normal(size=(2, 3, 4)).astype("float32")
    layer = FeedForward(hidden_units=6)
    layer(x)
    randomize(layer, seed=2)
    np.testing.assert_allclose(numpy(layer(x)), reference_feedforward(x, layer),
                               rtol=1e-4, atol=1e-4)


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))  # exact GELU, Keras's "gelu"


def reference_feedforward(x, layer):
    gamma, beta = (numpy(w) for w in layer.norm.weights)
    (w1, b1), (w2, b2) = ([numpy(w) for w in d.weights] for d in (layer.hidden, layer.output_layer))
    return x + gelu(layer_norm(x, gamma, beta) @ w1 + b1) @ w2 + b2


def reference_latent_block(x, block):
    """LN, multi-head self-attention one head at a time (heads key_dim wide), residual, FFN."""
    attention = block.attention
    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (
        [numpy(w) for w in dense.weights]
        for dense in (attention.query_dense, attention.key_dense, attention.value_dense,
                      attention.output_dense))
    h = layer_norm(x, *(numpy(w) for w in block.norm.weights))
    attended = np.zeros_like(x) + bo
    for head in range(wq.shape[1]):
        q, k, v = (h @ kernel[:, head] + bias[head]
                   for kernel, bias in ((wq, bq), (wk, bk), (wv, bv)))
        scores = np.einsum("bnk,bmk->bnm", q, k) / np.sqrt(wq.shape[-1])
        probabilities = np.exp(scores - scores.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        attended += probabilities @ v @ wo[head]
    return reference_feedforward(x + attended, block.feedforward)


@pytest.mark.parametrize("heads,key_dim", [(1, 8), (2, 8), (3, 4)])
def test_latent_transformer_block_matches_a_numpy_reference(heads, key_dim):
    latents = np.random.default_rng(heads).normal(size=(2, 5, 8)).astype("float32")
    block = LatentTransformerBlock(num_heads=heads, key_dim=key_dim, hidden_units=6)
    block(latents)
    randomize(block, seed=heads)
    out = numpy(block(latents))
    assert out.shape == (2, 5, 8)
    np.testing.assert_allclose(out, reference_latent_block(latents, block), rtol=1e-4, atol=1e-4)


# The model


def test_trainable_weights_do_not_depend_on_the_number_of_iterations():
    counts = set()
    for iterations in (1, 2, 5):
        model = tiny_classifier(num_iterations=iterations)
        counts.add((len(model.trainable_weights),
                    sum(int(np.prod(w.shape)) for w in model.trainable_weights)))
    assert len(counts) == 1, counts


def test_each_iteration_reads_the_image_again_through_the_same_layers():
    images = np.random.default_rng(4).integers(0, 256, (3, 16, 16, 3)).astype("uint8")
    model = tiny_classifier(num_iterations=3, images=images)
    weights = model.cross_attention_weights(images.astype("float32"))
    assert len(weights) == 3
    for iteration in weights:
        assert iteration.shape == (3, 2, 6, 16)  # images, heads, latents, 4x4 inputs
        np.testing.assert_allclose(iteration.sum(axis=-1), 1.0, atol=1e-5)
    # The same cross-attention gets different latents each time, so it looks elsewhere.
    assert not np.allclose(weights[0], weights[1])
    logits = numpy(model(images.astype("float32"), training=False))
    assert logits.shape == (3, 5)


# The first cross-attention: shared with the later iterations (the Keras example) or not (the paper)


def trainable_count(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def test_unshared_first_cross_attention_adds_exactly_one_cross_attention_block():
    # Three iterations: the first through its own pair, the second and third through one pair.
    shared = tiny_classifier(num_iterations=3)
    unshared = tiny_classifier(num_iterations=3, share_first_cross_attention=False)
    # TINY: width d = 8, inputs of width d too (the encoder projects them), a feedforward d wide.
    d = TINY["projection_dim"]
    norm, dense = 2 * d, d * d + d
    cross_attention = 2 * norm + 4 * dense  # two norms; query, key, value and output
    feedforward = norm + 2 * dense
    assert trainable_count(unshared) - trainable_count(shared) == cross_attention + feedforward
    assert len(unshared.trainable_weights) - len(shared.trainable_weights) == 2 * 2 + 4 * 2 + 2 + 4
    assert trainable_count(unshared.first_cross_attention) == cross_attention
    assert trainable_count(unshared.first_cross_feedforward) == feedforward


def test_unshared_first_iteration_reads_through_layers_of_its_own():
    unshared = tiny_classifier(num_iterations=3, share_first_cross_attention=False)
    first, second, third = (unshared.cross_attend_layers(i) for i in range(3))
    assert first == (unshared.first_cross_attention, unshared.first_cross_feedforward)
    assert second == third == (unshared.cross_attention, unshared.cross_feedforward)
    assert first[0] is not second[0] and first[1] is not second[1]
    shared = tiny_classifier(num_iterations=3)
    assert shared.first_cross_attention is None
    assert all(shared.cross_attend_layers(i) == (shared.cross_attention, shared.cross_feedforward)
               for i in range(3))


def reference_latents(model, images):
    """NumPy iterations: the first reads through the first_* layers when they exist."""
    data = numpy(model.encoder(model.patches(model.augmentation(images, training=False))))
    latents = np.broadcast_to(numpy(model.latent_array.latents), (len(images), 6, 8))
    for iteration in range(model.num_iterations):
        cross_attention, feedforward = (
            (model.first_cross_attention, model.first_cross_feedforward)
            if iteration == 0 and model.first_cross_attention is not None
            else (model.cross_attention, model.cross_feedforward))
        latents, _ = reference_cross_attention(latents, data, cross_attention, heads=2)
        latents = reference_feedforward(latents, feedforward)
        for block in model.latent_transformer:
            latents = reference_latent_block(latents, block)
    return latents


@pytest.mark.parametrize("share", [True, False])
def test_iterations_match_a_numpy_forward_pass_with_either_sharing(share):
    images = np.random.default_rng(6).integers(0, 256, (2, 16, 16, 3)).astype("float32")
    model = tiny_classifier(share_first_cross_attention=share, images=images.astype("uint8"))
    for layer in (model.latent_array, model.cross_attention, model.cross_feedforward,
                  *model.latent_transformer, model.first_cross_attention,
                  model.first_cross_feedforward):
        if layer is not None:
            randomize(layer, seed=7)  # the same values in both pairs when there are two
    if not share:
        randomize(model.first_cross_attention, seed=8)  # then the first pair differs
        randomize(model.first_cross_feedforward, seed=9)
    latents, _ = model.iterate(images, training=False)
    expected = reference_latents(model, images)
    np.testing.assert_allclose(numpy(latents), expected, rtol=1e-3, atol=1e-3)
    if not share:
        # Reading the first iteration through the shared pair gives other latents.
        model.first_cross_attention, first = None, model.first_cross_attention
        assert not np.allclose(reference_latents(model, images), expected, atol=1e-2)
        model.first_cross_attention = first


def test_with_one_iteration_the_switch_builds_the_same_model():
    images = np.random.default_rng(8).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    shared = tiny_classifier(num_iterations=1, images=images)
    unshared = tiny_classifier(num_iterations=1, share_first_cross_attention=False, images=images)
    assert unshared.first_cross_attention is None
    assert [layer.name for layer in unshared.layers] == [layer.name for layer in shared.layers]
    assert [w.shape for w in unshared.weights] == [w.shape for w in shared.weights]
    unshared.set_weights(shared.get_weights())
    x = images.astype("float32")
    np.testing.assert_array_equal(numpy(unshared(x, training=False)), numpy(shared(x, training=False)))


def test_build_perceiver_builds_and_runs_the_papers_sharing():
    images = np.random.default_rng(9).integers(0, 256, (3, 16, 16, 3)).astype("uint8")
    p = Parameters({**papers.defaults("perceiver"), **TINY, "share_first_cross_attention": False})
    model = build_perceiver(p, images, 5)
    assert model.share_first_cross_attention is False
    assert model.first_cross_attention.built and model.cross_attention.built
    logits = numpy(model(images.astype("float32"), training=False))
    assert logits.shape == (3, 5) and np.isfinite(logits).all()
    weights = model.cross_attention_weights(images.astype("float32"))
    assert len(weights) == 2 and not np.allclose(weights[0], weights[1])


def test_the_model_rejects_a_sharing_switch_that_is_not_a_bool():
    with pytest.raises(ValueError, match="share_first_cross_attention must be True or False"):
        tiny_classifier(share_first_cross_attention="no")


@pytest.mark.parametrize("position_encoding,share", [("learned", True), ("fourier", True),
                                                      ("learned", False)])
def test_model_round_trips_through_a_keras_file(tmp_path, position_encoding, share):
    images = np.random.default_rng(5).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    model = tiny_classifier(position_encoding=position_encoding, images=images,
                            share_first_cross_attention=share)
    path = tmp_path / "perceiver.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Perceiver)
    assert (loaded.num_iterations, loaded.position_encoding) == (2, position_encoding)
    assert loaded.share_first_cross_attention is share
    x = images.astype("float32")
    np.testing.assert_allclose(numpy(loaded(x, training=False)), numpy(model(x, training=False)),
                               atol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    ({"patch_size": 3}, "patch_size=3 must divide image_size=16"),
    ({"position_encoding": "sine"}, "position_encoding must be one of"),
    ({"num_iterations": 0}, "num_iterations must be >= 1"),
])
def test_the_model_rejects_impossible_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_classifier(**overrides)


def test_the_model_says_when_the_augmentation_does_not_resize_to_image_size():
    images = np.zeros((2, 16, 16, 3), np.uint8)
    arguments = {**TINY, "image_size": 32}
    model = Perceiver(5, augmentation_pipeline(images), **arguments)
    with pytest.raises(ValueError, match="gives 16x16 images, the model expects image_size=32"):
        model.build((None, 16, 16, 3))


def test_build_perceiver_takes_every_architecture_setting_from_the_parameters():
    images = np.zeros((2, 16, 16, 3), np.uint8)
    p = Parameters({**papers.defaults("perceiver"), **TINY, "position_encoding": "fourier",
                    "num_iterations": 3, "dropout_rate": 0.3, "attention_dropout": 0.05})
    model = build_perceiver(p, images, 5)
    assert model.built and model.name == "perceiver"
    assert isinstance(model.encoder, FourierPatchEncoder)
    assert (model.encoder.grid_size, model.encoder.num_bands) == (4, 3)
    assert model.latent_array.latents.shape == (6, 8)
    assert model.cross_attention.num_heads == 2
    assert len(model.latent_transformer) == 1
    assert model.latent_transformer[0].attention.num_heads == 2
    assert (model.num_iterations, model.dropout_rate, model.attention_dropout) == (3, 0.3, 0.05)
    assert model.logits.units == 5
    # The source's augmentation: standardize, resize to image_size, flip and zoom.
    assert model.augmentation(np.zeros((1, 16, 16, 3), "float32")).shape == (1, 16, 16, 3)
    names = [type(layer).__name__ for layer in model.augmentation.layers]
    assert "RandomFlip" in names and "RandomRotationZoom" in names
    assert (model.augmentation.layers[-1].rotation, model.augmentation.layers[-1].zoom) == (0.0, 0.2)


def test_the_perceiver_trains_with_lamb_and_its_weight_decay():
    optimizer = optimizer_factory(Parameters({"weight_decay": 3e-4}))(2e-3)
    assert isinstance(optimizer, keras.optimizers.Lamb)
    assert math.isclose(float(optimizer.learning_rate), 2e-3, rel_tol=1e-6)
    assert optimizer.weight_decay == 3e-4
    # The book-wide helper finds the same optimizer, at the notebook's defaults.
    default = papers.optimizer("perceiver")
    assert isinstance(default, keras.optimizers.Lamb) and default.weight_decay == 1e-4
    assert math.isclose(float(default.learning_rate), 1e-3, rel_tol=1e-6)


def training_cell():
    import nbformat

    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    return next(c.source for c in cells
                if c.cell_type == "code" and "run.train(" in c.source)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_training_cell_cuts_on_plateaus_or_follows_the_cosine(schedule, digits_split):
    """The notebook's own training cell, with a run whose ``train`` is the book's
    ``train_and_evaluate`` on a small digits model: the source's plateau cuts with
    the constant rate; with the cosine schedule no plateau callback (it could not
    set a rate that a schedule computes) and a rate that ends at 0."""
    from conftest import small_classifier
    from helpers.harness.train import train_and_evaluate

    trained = []

    class Run:
        p = Parameters({"weight_decay": 1e-4})

        def train(self, model, *, optimizer, callbacks, restore_best):
            trained.append([type(c).__name__ for c in callbacks])
            return train_and_evaluate(model, digits_split, epochs=2, batch_size=96,
                                      optimizer=optimizer, schedule=schedule,
                                      callbacks=callbacks, restore_best=restore_best, verbose=0)

    keras.utils.set_random_seed(0)
    model = small_classifier(digits_split)
    namespace = {"run": Run(), "model": model, "keras": keras, "np": np,
                 "optimizer_factory": optimizer_factory, "lr_schedule": schedule,
                 "lr_reduce_factor": 0.2, "lr_reduce_patience": 3, "early_stopping_patience": 15}
    exec(compile(training_cell(), "perceiver.ipynb:training", "exec"), namespace)
    expected = {"constant": ["ReduceLROnPlateau", "EarlyStopping"], "cosine": ["EarlyStopping"]}
    assert trained == [expected[schedule]]
    assert isinstance(model.optimizer, keras.optimizers.Lamb)
    final_rate = float(model.optimizer.learning_rate)
    if schedule == "cosine":
        assert final_rate == pytest.approx(0.0, abs=1e-8)
    else:
        assert final_rate == pytest.approx(1e-3)
    assert 1 <= namespace["best_epoch"] <= 2


def test_full_size_model_has_the_parameter_count_of_the_source_recipe():
    """CIFAR-100: 64 px, patch 2 (1,024 inputs), 256 x 256 latents, 4 blocks of 8 heads."""
    x = np.zeros((2, 32, 32, 3), np.uint8)
    model = papers.build("perceiver", x_train=x, num_classes=100)
    d, inputs, patch_values, heads = 256, 1024, 12, 8
    norm = 2 * d
    dense = d * d + d
    feedforward = norm + 2 * dense
    cross = 2 * norm + 4 * dense
    self_attention = 3 * (d * heads * d + heads * d) + (heads * d * d + d)
    block = norm + self_attention + feedforward
    expected = (7  # normalization statistics
                + patch_values * d + d + inputs * d  # projection and position table
                + 256 * d  # latent array
                + cross + feedforward + 4 * block
                + norm + dense + (d * 100 + 100))  # final norm and head
    assert model.count_params() == expected  # 9,763,947


# The notebook


def test_perceiver_defaults_are_the_source_recipe():
    declared = papermill.inspect_notebook(str(NOTEBOOK))
    defaults = {name: ast.literal_eval(info["default"]) for name, info in declared.items()}
    assert defaults | {
        "dataset": "cifar100", "image_size": 64, "patch_size": 2, "num_latents": 256,
        "projection_dim": 256, "num_heads": 8, "num_transformer_blocks": 4,
        "num_iterations": 2, "share_first_cross_attention": True,
        "position_encoding": "learned", "dropout_rate": 0.2,
        "learning_rate": 1e-3, "weight_decay": 1e-4, "lr_reduce_factor": 0.2,
        "lr_reduce_patience": 3, "lr_schedule": "constant", "early_stopping_patience": 15,
        "epochs": 50,
        "batch_size": 64, "validation_split": 0.1, "scaling_max_inputs": 4096,
    } == defaults


class Loaded:
    """What the start cell gets instead of a dataset, in the tests that load none."""

    def summary(self):
        return "(not loaded)"


@pytest.mark.parametrize("profile", ["full", "smoke", "cifar10-cpu"])
def test_the_profiles_pass_the_checks(profile, monkeypatch):
    from helpers.book.runner import profile_parameters

    loaded = []
    monkeypatch.setattr(helpers.harness.data, "load_dataset",
                        lambda name, **options: loaded.append(name) or Loaded())
    parameters = profile_parameters("perceiver", profile)
    namespace = start_cell_namespace(NOTEBOOK, parameters)
    assert loaded == [parameters["dataset"]]
    assert namespace["run"].p == parameters
    assert "p" not in namespace  # the analysis cells use p as a loop variable


@pytest.mark.parametrize("parameters,message", [
    ({"num_latents": 0}, "parameter num_latents must be > 0, got 0"),
    ({"projection_dim": -8}, "parameter projection_dim must be > 0, got -8"),
    ({"num_heads": 0}, "parameter num_heads must be > 0, got 0"),
    ({"cross_attention_heads": 3},
     "parameter cross_attention_heads must divide projection_dim=256, got 3"),
    ({"num_iterations": 0}, "parameter num_iterations must be > 0, got 0"),
    ({"num_transformer_blocks": 0}, "parameter num_transformer_blocks must be > 0, got 0"),
    ({"epochs": 0}, "parameter epochs must be > 0, got 0"),
    ({"batch_size": -1}, "parameter batch_size must be > 0, got -1"),
    ({"learning_rate": 0.0}, "parameter learning_rate must be > 0, got 0.0"),
    ({"weight_decay": -1e-4}, "parameter weight_decay must be >= 0, got -0.0001"),
    ({"num_bands": 0}, "parameter num_bands must be > 0, got 0"),
    ({"lr_reduce_factor": 1.0}, "parameter lr_reduce_factor must be in [0, 1), got 1.0"),
    ({"lr_reduce_factor": 0.0}, "parameter lr_reduce_factor must be > 0, got 0.0"),
    ({"lr_reduce_patience": 0}, "parameter lr_reduce_patience must be > 0, got 0"),
    ({"early_stopping_patience": 0}, "parameter early_stopping_patience must be > 0, got 0"),
    ({"lr_schedule": "plateau"},
     "parameter lr_schedule must be one of 'constant', 'cosine', got 'plateau'"),
    ({"dropout_rate": 1.0}, "parameter dropout_rate must be in [0, 1), got 1.0"),
    ({"attention_dropout": -0.1}, "parameter attention_dropout must be in [0, 1), got -0.1"),
    ({"validation_split": 0.0}, "parameter validation_split must be > 0: the plateau and "
                                "early-stopping callbacks watch the validation loss, got 0.0"),
    ({"num_latents": 2.5}, "parameter num_latents must be an integer, got 2.5"),
    ({"scaling_max_inputs": 32},
     "parameter scaling_max_inputs must be >= 64, the smallest number of inputs timed, got 32"),
    ({"scaling_repeats": 0}, "parameter scaling_repeats must be > 0, got 0"),
    ({"patch_size": 3}, "parameter patch_size must divide image_size=64, got 3"),
    ({"position_encoding": "sine"},
     "parameter position_encoding must be one of 'learned', 'fourier', got 'sine'"),
    ({"learning_rate": "fast"}, "parameter learning_rate must be a number, got 'fast'"),
    ({"share_first_cross_attention": "no"},
     "parameter share_first_cross_attention must be True or False, got 'no'"),
    ({"dataset": "imagenet"}, "parameter dataset must be one of cifar10, cifar100, digits or"),
    # The source calls the latent array's rows latent_dim: papermill alone would only warn.
    ({"latent_dim": 64}, "parameter latent_dim is not declared by this notebook: "
                         "did you mean num_latents"),
])
def test_bad_parameters_stop_the_perceiver_notebook_at_once(parameters, message, monkeypatch):
    assert_stops_before_loading_data(NOTEBOOK, parameters, message, monkeypatch)


# The smoke build (slow: the whole book executed once per session)


@pytest.mark.slow
def test_perceiver_smoke_run_learns_and_measures_the_attention_costs(smoke_build):
    from helpers.harness.records import read_record

    record = read_record(smoke_build["site"] / "book" / "results" / "perceiver.json")
    assert record["dataset"] == "digits" and record["backend"] == "tensorflow"
    assert record["parameters"]["position_encoding"] == "fourier"
    # 10 classes: chance is 10%; smoke runs reach 85-90%.
    assert record["test_top1"] > 0.7, record["test_top1"]
    assert record["history"]["loss"][-1] < 0.6 * record["history"]["loss"][0]
    scaling = record["scaling"]
    assert scaling["num_inputs"] == [64, 128, 256, 512, 1024, 2048]
    self_seconds = scaling["self-attention"]["seconds"]
    cross_seconds = scaling["cross-attention"]["seconds"]
    # M = 2048 inputs against 32 latents: the M x M score matrix is 64 times larger.
    assert self_seconds[-1] > 3 * cross_seconds[-1]
    assert self_seconds[-1] > 10 * self_seconds[0]
    assert scaling["memory_source"] is None  # CPU: no peak is made up
    assert scaling["self-attention"]["peak_bytes"] == [None] * 6
    print(f"Perceiver smoke: top-1 {record['test_top1']:.2%}, notebook "
          f"{smoke_build['seconds']['perceiver']:.0f} s, training {record['train_seconds']:.0f} s, "
          f"self/cross at M=2048 {self_seconds[-1] / cross_seconds[-1]:.0f}x")


@pytest.mark.slow
def test_executed_perceiver_notebook_has_its_figures_and_no_errors(smoke_build):
    nb = executed_notebook(smoke_build, "perceiver")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # Fourier bands, scaling, learning curves, cross-attention at the first and last iteration.
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    text = "".join(o.get("text", "") for o in outputs)
    for proof in ("FourierFeatures matches the NumPy reference",
                  "CrossAttention matches the NumPy reference",
                  "FeedForward matches the NumPy reference",
                  "LatentTransformerBlock matches the NumPy reference",
                  "the trainable weights are the same whatever the number of iterations",
                  "(one cross-attention block) from 2 iterations on, none with 1"):
        assert proof in text
    assert "Epoch 10/10" in text and "\r" not in text


@pytest.mark.slow
def test_site_has_the_perceiver_page_with_its_figures_and_glued_numbers(smoke_build):
    from bs4 import BeautifulSoup

    html = smoke_build["site"] / "_build" / "html" / "book" / "perceiver.html"
    page = BeautifulSoup(html.read_text(), "html.parser")
    assert "Perceiver" in page.title.text
    assert len([img for img in page.find_all("img") if "_images/" in img["src"]]) >= 5
    record = shown_records(smoke_build)["perceiver"]
    text = " ".join(page.get_text().split())
    assert f"reached {round(100 * record['test_top1'], 2)}% top-1" in text
    assert f"{record['parameter_count']:,} parameters" in text
    exponent = round(record["scaling"]["fitted_exponents"]["self-attention"], 2)
    assert f"has slope {exponent} for self-attention" in text
