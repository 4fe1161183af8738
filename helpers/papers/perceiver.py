# Generated from book/perceiver.ipynb by `python -m helpers.book.export`: edit the
# notebook's `# @save` cells, not this file. Each block names the cell it came from.
"""The Perceiver notebook's layers and model builder (Jaegle et al., 2021, "Perceiver:
General Perception with Iterative Attention"): Fourier position features, the latent
array, cross-attention, the latent transformer, the ``Perceiver`` model,
``build_perceiver`` and the LAMB ``optimizer_factory`` it trains with."""

import math

import keras
from keras import layers, ops

from helpers.harness.augment import augmentation_pipeline
from helpers.papers.vit import PatchEncoder, Patches

POSITION_ENCODINGS = ("learned", "fourier")


# book/perceiver.ipynb, cell 11 ("Where each input sits: learned or Fourier positions")
@keras.saving.register_keras_serializable(package="helpers")
class FourierFeatures(layers.Layer):
    """Append the Fourier features of each token's grid position to the token.

    Tokens come from a ``grid_size`` x ``grid_size`` grid in row-major order.
    Each of the two coordinates x, scaled to [-1, 1], gives ``2 * num_bands + 1``
    features: x itself, then sin(pi f_k x) and cos(pi f_k x) for ``num_bands``
    frequencies f_k evenly spaced from 1 to grid_size / 2, the Nyquist
    frequency of the grid. (batch, tokens, channels) ->
    (batch, tokens, channels + 2 * (2 * num_bands + 1)).
    """

    def __init__(self, grid_size, num_bands, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = grid_size
        self.num_bands = num_bands

    @property
    def num_features(self):
        return 2 * (2 * self.num_bands + 1)

    def encoding(self):
        """The features of every grid position, (grid_size**2, num_features).

        Computed in float32 whatever the dtype policy: in bfloat16 an angle near
        pi * grid_size / 2 (50 for a 32-wide grid) is off by up to 0.125, and so
        are its sine and cosine. ``call`` casts the features to the tokens' dtype.
        """
        positions = ops.linspace(-1.0, 1.0, self.grid_size, dtype="float32")
        frequencies = ops.linspace(1.0, self.grid_size / 2, self.num_bands, dtype="float32")
        angles = math.pi * positions[:, None] * frequencies[None, :]
        per_axis = ops.concatenate(
            [positions[:, None], ops.sin(angles), ops.cos(angles)], axis=-1
        )  # (grid_size, 2 * num_bands + 1)
        # Token r * grid_size + c sits at row r and column c.
        rows = ops.repeat(per_axis, self.grid_size, axis=0)
        cols = ops.tile(per_axis, (self.grid_size, 1))
        return ops.concatenate([rows, cols], axis=-1)

    def call(self, tokens):
        encoding = ops.cast(self.encoding(), tokens.dtype)
        batch = ops.shape(tokens)[0]
        encoding = ops.broadcast_to(encoding[None], (batch, *encoding.shape))
        return ops.concatenate([tokens, encoding], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.num_features)

    def get_config(self):
        return {**super().get_config(), "grid_size": self.grid_size, "num_bands": self.num_bands}


@keras.saving.register_keras_serializable(package="helpers")
class FourierPatchEncoder(layers.Layer):
    """Flattened patches with the Fourier features of their positions, projected linearly."""

    def __init__(self, grid_size, num_bands, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = grid_size
        self.num_bands = num_bands
        self.projection_dim = projection_dim
        self.features = FourierFeatures(grid_size, num_bands)
        self.projection = layers.Dense(projection_dim)

    def build(self, input_shape):
        self.projection.build(self.features.compute_output_shape(input_shape))

    def call(self, patches):
        return self.projection(self.features(patches))

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": self.grid_size,
            "num_bands": self.num_bands,
            "projection_dim": self.projection_dim,
        }


# book/perceiver.ipynb, cell 19 ("The latent array")
@keras.saving.register_keras_serializable(package="helpers")
class LatentArray(layers.Layer):
    """The learned latent array, (num_latents, latent_dim), one copy per input of the batch.

    Called on the data array (batch, M, channels); the data only give the batch size.
    """

    def __init__(self, num_latents, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_latents = num_latents
        self.latent_dim = latent_dim

    def build(self, data_shape):
        self.latents = self.add_weight(
            shape=(self.num_latents, self.latent_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="latents",
        )

    def call(self, data):
        batch = ops.shape(data)[0]
        latents = ops.cast(self.latents, data.dtype)
        return ops.broadcast_to(latents[None], (batch, self.num_latents, self.latent_dim))

    def compute_output_shape(self, data_shape):
        return (data_shape[0], self.num_latents, self.latent_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "num_latents": self.num_latents,
            "latent_dim": self.latent_dim,
        }


# book/perceiver.ipynb, cell 22 ("Cross-attention")
@keras.saving.register_keras_serializable(package="helpers")
class CrossAttention(layers.Layer):
    """Queries from the latents, keys and values from the data, plus a residual.

    latents (batch, N, D), data (batch, M, C) -> (batch, N, D):

        Q = LN(latents) W_q,  K = LN(data) W_k,  V = LN(data) W_v  (num_heads heads of D / num_heads)
        out = latents + concat_heads(softmax(Q K^T / sqrt(D / num_heads)) V) W_o

    The score matrix of a head is N x M: the cost grows as M * N, not M**2.
    Called with the data as latents, the layer is ordinary self-attention.
    With ``return_attention_scores=True`` it also returns the attention
    weights, (batch, num_heads, N, M), each row summing to 1.
    """

    def __init__(self, num_heads=1, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.latent_norm = layers.LayerNormalization(epsilon=1e-6)
        self.data_norm = layers.LayerNormalization(epsilon=1e-6)
        self.dropout = layers.Dropout(dropout_rate)

    def build(self, latents_shape, data_shape):
        width = latents_shape[-1]
        if width % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must divide the latent width {width}"
            )
        head_dim = width // self.num_heads
        self.latent_norm.build(latents_shape)
        self.data_norm.build(data_shape)
        self.query = layers.EinsumDense(
            "bnd,dhk->bnhk", (None, self.num_heads, head_dim), bias_axes="hk", name="query"
        )
        self.key = layers.EinsumDense(
            "bmc,chk->bmhk", (None, self.num_heads, head_dim), bias_axes="hk", name="key"
        )
        self.value = layers.EinsumDense(
            "bmc,chk->bmhk", (None, self.num_heads, head_dim), bias_axes="hk", name="value"
        )
        self.output_projection = layers.EinsumDense(
            "bnhk,hkd->bnd", (None, width), bias_axes="d", name="output"
        )
        self.query.build(latents_shape)
        self.key.build(data_shape)
        self.value.build(data_shape)
        self.output_projection.build((latents_shape[0], latents_shape[1], self.num_heads, head_dim))

    def call(self, latents, data, training=None, return_attention_scores=False):
        queries = self.query(self.latent_norm(latents))  # (batch, N, heads, head_dim)
        normed = self.data_norm(data)
        keys, values = self.key(normed), self.value(normed)  # (batch, M, heads, head_dim)
        # Scaled before the product, as MultiHeadAttention does: in float16 the
        # unscaled scores could pass its largest value, 65504.
        queries = queries * (1.0 / math.sqrt(queries.shape[-1]))
        scores = ops.einsum("bnhk,bmhk->bhnm", queries, keys)
        weights = ops.softmax(scores, axis=-1)  # (batch, heads, N, M)
        mixed = ops.einsum("bhnm,bmhk->bnhk", self.dropout(weights, training=training), values)
        outputs = latents + self.output_projection(mixed)
        return (outputs, weights) if return_attention_scores else outputs

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "dropout_rate": self.dropout_rate,
        }


# book/perceiver.ipynb, cell 27 ("The latent transformer")
@keras.saving.register_keras_serializable(package="helpers")
class FeedForward(layers.Layer):
    """Residual feedforward network: x + Dropout(Dense(GELU(Dense(LN(x)))))."""

    def __init__(self, hidden_units, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.dropout_rate = dropout_rate
        self.norm = layers.LayerNormalization(epsilon=1e-6)
        self.hidden = layers.Dense(hidden_units, activation="gelu")
        self.dropout = layers.Dropout(dropout_rate)

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.hidden.build(input_shape)
        self.output_layer = layers.Dense(input_shape[-1])
        self.output_layer.build((*input_shape[:-1], self.hidden_units))

    def call(self, x, training=None):
        h = self.output_layer(self.hidden(self.norm(x)))
        return x + self.dropout(h, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "dropout_rate": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="helpers")
class LatentTransformerBlock(layers.Layer):
    """Self-attention among the latents, x + MSA(LN(x)), then the feedforward network.

    As in the source example, each of the ``num_heads`` heads has size ``key_dim``.
    """

    def __init__(self, num_heads, key_dim, hidden_units, dropout_rate=0.0,
                 attention_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.hidden_units = hidden_units
        self.dropout_rate = dropout_rate
        self.attention_dropout = attention_dropout
        self.norm = layers.LayerNormalization(epsilon=1e-6)
        self.attention = layers.MultiHeadAttention(num_heads, key_dim, dropout=attention_dropout)
        self.feedforward = FeedForward(hidden_units, dropout_rate)

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.feedforward.build(input_shape)

    def call(self, latents, training=None):
        h = self.norm(latents)
        latents = latents + self.attention(h, h, training=training)
        return self.feedforward(latents, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "hidden_units": self.hidden_units,
            "dropout_rate": self.dropout_rate,
            "attention_dropout": self.attention_dropout,
        }


# book/perceiver.ipynb, cell 34 ("The whole model")
@keras.saving.register_keras_serializable(package="helpers")
class Perceiver(keras.Model):
    """Perceiver image classifier: cross-attention and a latent transformer, iterated.

    images -> augmentation -> patches -> encoded inputs (batch, M, D), M = (image_size / patch_size)**2;
    the latent array (N, D) then goes ``num_iterations`` times through a
    cross-attention + feedforward and the same ``num_transformer_blocks``
    self-attention blocks; the final latents are normalized, averaged and
    classified. Every iteration uses the same cross-attention and feedforward
    (``share_first_cross_attention=True``, the Keras example), or the first
    iteration has its own and the later ones share a second pair (``False``,
    the paper's ImageNet models; with one iteration both build the same model).
    """

    def __init__(
        self,
        num_classes,
        augmentation,
        image_size,
        patch_size,
        num_latents,
        projection_dim,
        num_heads,
        num_transformer_blocks,
        num_iterations,
        share_first_cross_attention=True,
        cross_attention_heads=1,
        position_encoding="learned",
        num_bands=64,
        dropout_rate=0.2,
        attention_dropout=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if image_size % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide image_size={image_size}")
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"position_encoding must be one of {POSITION_ENCODINGS}, got {position_encoding!r}"
            )
        if num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
        if not isinstance(share_first_cross_attention, bool):
            raise ValueError(f"share_first_cross_attention must be True or False, "
                             f"got {share_first_cross_attention!r}")
        self.num_classes = num_classes
        self.augmentation = augmentation
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_latents = num_latents
        self.projection_dim = projection_dim
        self.num_heads = num_heads
        self.num_transformer_blocks = num_transformer_blocks
        self.num_iterations = num_iterations
        self.share_first_cross_attention = share_first_cross_attention
        self.cross_attention_heads = cross_attention_heads
        self.position_encoding = position_encoding
        self.num_bands = num_bands
        self.dropout_rate = dropout_rate
        self.attention_dropout = attention_dropout

        grid_size = image_size // patch_size
        self.patches = Patches(patch_size, name="patches")
        if position_encoding == "learned":
            self.encoder = PatchEncoder(grid_size**2, projection_dim, name="learned_encoder")
        else:
            self.encoder = FourierPatchEncoder(
                grid_size, num_bands, projection_dim, name="fourier_encoder"
            )
        self.latent_array = LatentArray(num_latents, projection_dim, name="latent_array")
        self.cross_attention = CrossAttention(
            cross_attention_heads, attention_dropout, name="cross_attention"
        )
        self.cross_feedforward = FeedForward(projection_dim, dropout_rate, name="cross_feedforward")
        # The paper's sharing: the first iteration gets layers of its own. With one
        # iteration there is no later one to share with: the model stays the same.
        self.first_cross_attention = self.first_cross_feedforward = None
        if not share_first_cross_attention and num_iterations > 1:
            self.first_cross_attention = CrossAttention(
                cross_attention_heads, attention_dropout, name="first_cross_attention"
            )
            self.first_cross_feedforward = FeedForward(
                projection_dim, dropout_rate, name="first_cross_feedforward"
            )
        self.latent_transformer = [
            LatentTransformerBlock(
                num_heads, projection_dim, projection_dim, dropout_rate, attention_dropout,
                name=f"latent_block_{index + 1}",
            )
            for index in range(num_transformer_blocks)
        ]
        self.final_norm = layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        self.pooling = layers.GlobalAveragePooling1D(name="average_latents")
        self.head_hidden = layers.Dense(projection_dim, activation="gelu", name="head_hidden")
        self.head_dropout = layers.Dropout(dropout_rate, name="head_dropout")
        # float32 logits, whatever the dtype policy: the loss and the metrics read them
        self.logits = layers.Dense(num_classes, name="logits", dtype="float32")

    def build(self, input_shape):
        # A symbolic forward pass builds every sublayer with the shape it receives.
        self.call(keras.KerasTensor(input_shape))

    def cross_attend_layers(self, iteration):
        """The cross-attention and feedforward layers of iteration ``iteration`` (from 0)."""
        if iteration == 0 and self.first_cross_attention is not None:
            return self.first_cross_attention, self.first_cross_feedforward
        return self.cross_attention, self.cross_feedforward

    def iterate(self, images, training=None):
        """The latents after the last iteration, and the cross-attention weights of each.

        Returns ``(latents, weights)``: latents (batch, N, D); weights a list of
        ``num_iterations`` arrays (batch, cross_attention_heads, N, M).
        """
        images = self.augmentation(images, training=training)
        if tuple(images.shape[1:3]) != (self.image_size, self.image_size):
            raise ValueError(
                f"the augmentation gives {images.shape[1]}x{images.shape[2]} images, the model "
                f"expects image_size={self.image_size}: resize to image_size in the augmentation"
            )
        data = self.encoder(self.patches(images))
        latents = self.latent_array(data)
        weights = []
        for iteration in range(self.num_iterations):
            cross_attention, cross_feedforward = self.cross_attend_layers(iteration)
            latents, iteration_weights = cross_attention(
                latents, data, training=training, return_attention_scores=True
            )
            latents = cross_feedforward(latents, training=training)
            for block in self.latent_transformer:  # the same blocks at every iteration
                latents = block(latents, training=training)
            weights.append(iteration_weights)
        return latents, weights

    def call(self, images, training=None):
        latents, _ = self.iterate(images, training=training)
        x = self.pooling(self.final_norm(latents))
        x = self.head_dropout(self.head_hidden(x), training=training)
        return self.logits(x)

    def cross_attention_weights(self, images):
        """Per iteration, the cross-attention weights on ``images`` (inference mode), as
        float32 NumPy arrays whatever the model's precision."""
        _, weights = self.iterate(images, training=False)
        return [ops.convert_to_numpy(ops.cast(w, "float32")) for w in weights]

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "augmentation": keras.saving.serialize_keras_object(self.augmentation),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_latents": self.num_latents,
            "projection_dim": self.projection_dim,
            "num_heads": self.num_heads,
            "num_transformer_blocks": self.num_transformer_blocks,
            "num_iterations": self.num_iterations,
            "share_first_cross_attention": self.share_first_cross_attention,
            "cross_attention_heads": self.cross_attention_heads,
            "position_encoding": self.position_encoding,
            "num_bands": self.num_bands,
            "dropout_rate": self.dropout_rate,
            "attention_dropout": self.attention_dropout,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)


def perceiver_augmentation(p, x_train):
    """The source's input pipeline: standardize with ``x_train``'s statistics, resize
    to ``p.image_size``; in training, random horizontal flips and zooms up to 20%."""
    return augmentation_pipeline(
        x_train, image_size=p.image_size, normalize="adapt", flip="horizontal", zoom=0.2,
        seed=p.seed,
    )


def build_perceiver(p, x_train, num_classes, name="perceiver"):
    """The built ``Perceiver`` of parameters ``p``: augmentation, inputs, latents, head.

    ``x_train`` (uint8 training images) sets the input shape and the statistics
    the input is standardized with.
    """
    model = Perceiver(
        num_classes,
        perceiver_augmentation(p, x_train),
        image_size=p.image_size,
        patch_size=p.patch_size,
        num_latents=p.num_latents,
        projection_dim=p.projection_dim,
        num_heads=p.num_heads,
        num_transformer_blocks=p.num_transformer_blocks,
        num_iterations=p.num_iterations,
        share_first_cross_attention=p.share_first_cross_attention,
        cross_attention_heads=p.cross_attention_heads,
        position_encoding=p.position_encoding,
        num_bands=p.num_bands,
        dropout_rate=p.dropout_rate,
        attention_dropout=p.attention_dropout,
        name=name,
    )
    model.build((None, *x_train.shape[1:]))
    return model


# book/perceiver.ipynb, cell 44 ("Training")
def optimizer_factory(p):
    """LAMB with the weight decay of ``p``, as a function of the learning rate."""
    return lambda rate: keras.optimizers.Lamb(learning_rate=rate, weight_decay=p.weight_decay)


# The values of the parameters cell of book/perceiver.ipynb: the full-size recipe.
DEFAULTS = {
    'dataset': 'cifar100',
    'n_train': 0,
    'n_test': 0,
    'validation_split': 0.1,
    'image_size': 64,
    'patch_size': 2,
    'position_encoding': 'learned',
    'num_bands': 64,
    'num_latents': 256,
    'projection_dim': 256,
    'cross_attention_heads': 1,
    'num_heads': 8,
    'num_transformer_blocks': 4,
    'num_iterations': 2,
    'share_first_cross_attention': True,
    'dropout_rate': 0.2,
    'attention_dropout': 0.1,
    'learning_rate': 0.001,
    'weight_decay': 0.0001,
    'lr_reduce_factor': 0.2,
    'lr_reduce_patience': 3,
    'lr_schedule': 'constant',
    'early_stopping_patience': 15,
    'epochs': 50,
    'batch_size': 64,
    'seed': 42,
    'data_parallel': False,
    'precision': 'float32',
    'scaling_max_inputs': 4096,
    'scaling_batch_size': 8,
    'scaling_repeats': 5,
    'results_dir': 'results',
}
