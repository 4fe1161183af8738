# Generated from book/cct.ipynb by `python -m helpers.book.export`: edit the
# notebook's `# @save` cells, not this file. Each block names the cell it came from.
"""The CCT notebook's layers and model builder (Hassani et al., 2021, "Escaping the
Big Data Paradigm with Compact Transformers"): the input pipeline, the
convolutional tokenizer, position embedding, stochastic-depth block, sequence
pooling, ``build_cct``, and the read-out of the pooling weights."""

import keras
import numpy as np
from keras import layers, ops

from helpers.harness.augment import augmentation_pipeline
from helpers.harness.parameters import require
from helpers.papers.layers import StochasticDepth
from helpers.papers.vit import mlp


# book/cct.ipynb, cell 9 ("Augmentation: a crop that crops")
def cct_augmentation(p):
    """CCT's input pipeline: rescale to [0, 1]; in training, pad ``p.crop_padding``
    zero pixels on each side and crop back to the image size at a random offset,
    then flip at random (``p.flip``; ``"none"``: no flip). At inference: the image."""
    return augmentation_pipeline(normalize="rescale", pad=p.crop_padding,
                                 flip=None if p.flip == "none" else p.flip, seed=p.seed)


# book/cct.ipynb, cell 12 ("The convolutional tokenizer")
def token_grid(height, width, conv_layers, kernel_size=3, stride=1, padding=1,
               pooling_stride=2):
    """(rows, cols) of the token grid that ``CCTTokenizer`` makes of an image.

    Each stage: an unpadded convolution, ``padding`` zero pixels on each side,
    then a "same" max-pooling with stride ``pooling_stride``. (0, 0) when a
    stage gets a map smaller than the kernel.
    """
    sides = []
    for side in (height, width):
        for _ in range(conv_layers):
            if side < kernel_size:
                return (0, 0)
            side = (side - kernel_size) // stride + 1 + 2 * padding
            side = -(-side // pooling_stride)
        sides.append(side)
    return tuple(sides)


def checked_token_grid(height, width, conv_layers):
    """``token_grid`` of ``conv_layers`` stages on ``height`` x ``width`` images; fails,
    naming the parameter, when a stage gets a map smaller than its 3x3 kernel."""
    rows, cols = token_grid(height, width, conv_layers)
    require(conv_layers >= 1, "conv_layers", f"must be > 0, got {conv_layers}")
    require(rows > 0 and cols > 0, "conv_layers",
            f"must leave a map of at least 3x3 pixels for every stage: {conv_layers} stages "
            f"are too many for {height}x{width} images")
    return rows, cols


@keras.saving.register_keras_serializable(package="helpers")
class CCTTokenizer(layers.Layer):
    """Images -> tokens with a small convolutional network (CCT).

    One stage per entry of ``num_output_channels``: Conv2D (unpadded, ReLU, no
    bias) -> ZeroPadding2D -> MaxPooling2D ("same"). The last feature map,
    (batch, rows, cols, channels), is read row by row as (batch, rows * cols,
    channels) tokens.
    """

    def __init__(self, num_output_channels=(64, 128), kernel_size=3, stride=1, padding=1,
                 pooling_kernel_size=3, pooling_stride=2, **kwargs):
        super().__init__(**kwargs)
        self.num_output_channels = [int(c) for c in num_output_channels]
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.pooling_kernel_size = pooling_kernel_size
        self.pooling_stride = pooling_stride
        self.stages = [
            keras.Sequential(
                [
                    layers.Conv2D(channels, kernel_size, stride, padding="valid",
                                  use_bias=False, activation="relu",
                                  kernel_initializer="he_normal"),
                    layers.ZeroPadding2D(padding),
                    layers.MaxPooling2D(pooling_kernel_size, pooling_stride, padding="same"),
                ],
                name=f"stage_{index + 1}",
            )
            for index, channels in enumerate(self.num_output_channels)
        ]

    def build(self, input_shape):
        shape = input_shape
        for stage in self.stages:
            stage.build(shape)
            shape = stage.compute_output_shape(shape)

    def feature_maps(self, images):
        """The output of every stage, (batch, rows, cols, channels) each."""
        maps = []
        for stage in self.stages:
            images = stage(images)
            maps.append(images)
        return maps

    def call(self, images):
        features = self.feature_maps(images)[-1]
        _, rows, cols, channels = features.shape
        return ops.reshape(features, (-1, rows * cols, channels))

    def get_config(self):
        return {
            **super().get_config(),
            "num_output_channels": self.num_output_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "pooling_kernel_size": self.pooling_kernel_size,
            "pooling_stride": self.pooling_stride,
        }


# book/cct.ipynb, cell 18 ("Position embedding (optional)")
@keras.saving.register_keras_serializable(package="helpers")
class PositionEmbedding(layers.Layer):
    """Add a learned vector to each position of a (batch, tokens, width) sequence."""

    def __init__(self, stddev=0.2, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def build(self, input_shape):
        self.position_embedding = self.add_weight(
            shape=(input_shape[1], input_shape[2]),
            initializer=keras.initializers.TruncatedNormal(stddev=self.stddev),
            name="position_embedding",
        )

    def call(self, tokens):
        return tokens + self.position_embedding

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


# book/cct.ipynb, cell 22 ("Stochastic depth")
def drop_path_rates(stochastic_depth_rate, transformer_layers):
    """Drop rate of each block: linear from 0 (first block) to the given rate (last)."""
    return [float(rate) for rate in np.linspace(0.0, stochastic_depth_rate, transformer_layers)]


# book/cct.ipynb, cell 27 ("The encoder block")
def cct_block(tokens, num_heads, projection_dim, transformer_units, dropout_rate,
              drop_path_rate, seed=None):
    """Pre-norm transformer block with stochastic depth on both residual branches:
    the Keras example's block (the authors' code normalizes the residual stream
    after attention instead of the MLP's input).

    x + drop(MSA(LN(x))), then x + drop(MLP(LN(x))); ``transformer_units[-1]``
    must equal the token width. ``seed`` seeds the two drop-path layers
    (``seed`` and ``seed + 1``).
    """
    seeds = (None, None) if seed is None else (seed, seed + 1)
    x = layers.LayerNormalization(epsilon=1e-5)(tokens)
    x = layers.MultiHeadAttention(num_heads=num_heads, key_dim=projection_dim,
                                  dropout=dropout_rate)(x, x)
    tokens = layers.Add()([tokens, StochasticDepth(drop_path_rate, seed=seeds[0])(x)])
    x = layers.LayerNormalization(epsilon=1e-5)(tokens)
    x = mlp(x, transformer_units, dropout_rate)
    return layers.Add()([tokens, StochasticDepth(drop_path_rate, seed=seeds[1])(x)])


# book/cct.ipynb, cell 32 ("Sequence pooling")
@keras.saving.register_keras_serializable(package="helpers")
class SequencePooling(layers.Layer):
    """Attention-weighted average of a (batch, tokens, width) sequence (CCT's SeqPool).

    A dense layer scores each token, a softmax over the tokens gives the
    weights (batch, tokens), summing to 1 per image; the output is the weighted
    sum of the tokens, (batch, width). With ``return_weights=True`` the call
    returns ``(pooled, weights)``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = layers.Dense(1, name="attention")

    def build(self, input_shape):
        self.attention.build(input_shape)

    def call(self, tokens, return_weights=False):
        scores = ops.squeeze(self.attention(tokens), axis=-1)  # (batch, tokens)
        weights = ops.softmax(scores, axis=-1)
        pooled = ops.einsum("bn,bnd->bd", weights, tokens)
        return (pooled, weights) if return_weights else pooled


# book/cct.ipynb, cell 36 ("Sequence pooling")
@keras.saving.register_keras_serializable(package="helpers")
class ClassToken(layers.Layer):
    """Prepend one learned token: (batch, tokens, width) -> (batch, tokens + 1, width).

    The classifier of ``pooling="class_token"`` reads the output at position 0.
    """

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros",
                                     name="class_token")

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        token = ops.cast(ops.broadcast_to(self.token, (batch, 1, tokens.shape[-1])), tokens.dtype)
        return ops.concatenate([token, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        steps = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], steps, input_shape[-1])


# book/cct.ipynb, cell 39 ("The whole model")
POOLINGS = ("sequence", "class_token", "average")


def build_cct(p, x_train, num_classes, name="cct"):
    """The CCT classifier of parameters ``p``: augmentation, convolutional tokens, CCT
    blocks, pooling, logits.

    ``x_train`` (uint8 training images) sets the input shape. The tokenizer has
    ``p.conv_layers`` stages, ``p.conv_channels`` channels each but the last, which
    has ``p.projection_dim``. Block ``i`` drops its branches at rate
    ``drop_path_rates(p.stochastic_depth_rate, p.transformer_layers)[i]`` and seeds
    them from ``p.seed``. ``p.pooling`` (``POOLINGS``) reads the tokens for the
    classifier: ``"sequence"`` (``SequencePooling``), ``"class_token"``
    (``ClassToken`` before the blocks, its output classified) or ``"average"``.
    """
    pooling = p.get("pooling", "sequence")
    require(pooling in POOLINGS, "pooling", f"must be one of {POOLINGS}, got {pooling!r}")
    units = list(p.transformer_units)
    require(units[-1:] == [p.projection_dim], "transformer_units",
            f"must end with projection_dim={p.projection_dim}, got {units}")
    checked_token_grid(x_train.shape[1], x_train.shape[2], p.conv_layers)
    inputs = keras.Input(shape=x_train.shape[1:])
    x = cct_augmentation(p)(inputs)
    channels = [p.conv_channels] * (p.conv_layers - 1) + [p.projection_dim]
    tokens = CCTTokenizer(channels, name="tokenizer")(x)
    if p.positional_emb:
        tokens = PositionEmbedding(name="position_embedding")(tokens)
    if pooling == "class_token":
        tokens = ClassToken(name="class_token")(tokens)
    for index, rate in enumerate(drop_path_rates(p.stochastic_depth_rate, p.transformer_layers)):
        tokens = cct_block(tokens, p.num_heads, p.projection_dim, units, p.dropout_rate, rate,
                           seed=p.seed + 2 * index)
    tokens = layers.LayerNormalization(epsilon=1e-5, name="final_norm")(tokens)
    if pooling == "sequence":
        pooled = SequencePooling(name="sequence_pooling")(tokens)
    elif pooling == "class_token":
        pooled = tokens[:, 0]  # the class token's output
    else:
        pooled = layers.GlobalAveragePooling1D(name="average_pooling")(tokens)
    # float32 logits, whatever the dtype policy: the loss and the metrics read them
    logits = layers.Dense(num_classes, name="logits", dtype="float32")(pooled)
    return keras.Model(inputs, logits, name=name)


# book/cct.ipynb, cell 49 ("Where sequence pooling looks")
def sequence_pooling_weights(model, images, batch_size=256):
    """Sequence-pooling weights of ``model`` on ``images``, (batch, tokens), float32 NumPy.

    The pooling layer is the model's ``SequencePooling`` layer; each row sums
    to 1. Tokens are in the tokenizer's row-major grid order.
    """
    pooling = next((layer for layer in model.layers if isinstance(layer, SequencePooling)),
                   None)
    if pooling is None:
        raise ValueError("the model has no SequencePooling layer (pooling='sequence' only)")
    probe = keras.Model(model.input, pooling.input)
    weights = []
    for start in range(0, len(images), batch_size):
        tokens = probe(images[start:start + batch_size], training=False)
        _, batch_weights = pooling(tokens, return_weights=True)
        weights.append(ops.convert_to_numpy(ops.cast(batch_weights, "float32")))
    return np.concatenate(weights)


# The values of the parameters cell of book/cct.ipynb: the full-size recipe.
DEFAULTS = {
    'dataset': 'cifar10',
    'n_train': 0,
    'n_test': 0,
    'validation_split': 0.1,
    'crop_padding': 4,
    'flip': 'horizontal',
    'conv_layers': 2,
    'conv_channels': 64,
    'positional_emb': True,
    'projection_dim': 128,
    'num_heads': 2,
    'transformer_layers': 2,
    'transformer_units': [128, 128],
    'dropout_rate': 0.1,
    'stochastic_depth_rate': 0.1,
    'pooling': 'sequence',
    'learning_rate': 0.001,
    'weight_decay': 0.0001,
    'weight_decay_mode': 'lr_scaled',
    'label_smoothing': 0.1,
    'lr_schedule': 'constant',
    'epochs': 30,
    'batch_size': 128,
    'seed': 42,
    'data_parallel': False,
    'precision': 'float32',
    'results_dir': 'results',
}
