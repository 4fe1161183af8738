# Generated from book/vit.ipynb by `python -m helpers.book.export`: edit the
# notebook's `# @save` cells, not this file. Each block names the cell it came from.
"""The ViT notebook's layers and model builder (Dosovitskiy et al., 2021, "An Image
is Worth 16x16 Words"): patches, patch encoder, pre-norm transformer block,
``build_vit``, and the attention read-out the later notebooks reuse."""

import keras
import numpy as np
from keras import layers, ops

from helpers.harness.augment import augmentation_pipeline


# book/vit.ipynb, cell 9 ("From image to patches")
class Patches(layers.Layer):
    """Cut images into non-overlapping square patches, one flattened patch per token.

    (batch, height, width, channels) -> (batch, num_patches, patch_size**2 * channels),
    patches in row-major order over the image.
    """

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        patches = ops.image.extract_patches(images, size=self.patch_size)
        _, rows, cols, patch_dim = patches.shape
        return ops.reshape(patches, (-1, rows * cols, patch_dim))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


# book/vit.ipynb, cell 17 ("Patch encoder: projection and position")
class PatchEncoder(layers.Layer):
    """Linear projection of flattened patches plus a learned position embedding."""

    def __init__(self, num_patches, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection_dim = projection_dim
        self.projection = layers.Dense(projection_dim)

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.position_embedding = self.add_weight(
            shape=(self.num_patches, self.projection_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="position_embedding",
        )

    def call(self, patches):
        return self.projection(patches) + self.position_embedding

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "projection_dim": self.projection_dim,
        }


# book/vit.ipynb, cell 22 ("Transformer block")
def mlp(x, hidden_units, dropout_rate):
    """Dense + GELU + dropout for each width in ``hidden_units``."""
    for units in hidden_units:
        x = layers.Dense(units, activation="gelu")(x)
        x = layers.Dropout(dropout_rate)(x)
    return x


def transformer_block(x, num_heads, key_dim, mlp_units, dropout_rate, attention=None):
    """Pre-norm block: x + MSA(LN(x)), then x + MLP(LN(x)).

    ``attention`` is a layer called as ``attention(query, value)``; by default a
    ``MultiHeadAttention`` with ``num_heads`` heads of size ``key_dim``.
    """
    if attention is None:
        attention = layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=key_dim, dropout=dropout_rate
        )
    h = layers.LayerNormalization(epsilon=1e-6)(x)
    x = layers.Add()([x, attention(h, h)])
    h = layers.LayerNormalization(epsilon=1e-6)(x)
    return layers.Add()([x, mlp(h, mlp_units, dropout_rate)])


# book/vit.ipynb, cell 26 ("The whole model")
def vit_augmentation(p, x_train):
    """The ViT's input pipeline: standardize with ``x_train``'s statistics, resize
    to ``p.image_size``; in training, random horizontal flips, rotations up to 2%
    of a turn and zooms up to 20%."""
    return augmentation_pipeline(
        x_train, image_size=p.image_size, normalize="adapt",
        flip="horizontal", rotation=0.02, zoom=0.2, seed=p.seed,
    )


def build_vit(p, x_train, num_classes, tokenizer=None, attention_factory=None, name="vit"):
    """The ViT classifier of parameters ``p``: augmentation, tokens, blocks, head, logits.

    ``x_train`` (uint8 training images) sets the input shape and the statistics
    the input is standardized with. ``tokenizer`` (a layer: images -> tokens)
    replaces Patches + PatchEncoder and ``attention_factory`` (a callable
    returning a new attention layer) replaces the blocks' ``MultiHeadAttention``;
    the SPT + LSA notebook uses both.
    """
    num_patches = (p.image_size // p.patch_size) ** 2
    inputs = keras.Input(shape=x_train.shape[1:])
    x = vit_augmentation(p, x_train)(inputs)
    if tokenizer is None:
        tokens = PatchEncoder(num_patches, p.projection_dim)(Patches(p.patch_size)(x))
    else:
        tokens = tokenizer(x)
    for _ in range(p.transformer_layers):
        attention = attention_factory() if attention_factory else None
        tokens = transformer_block(
            tokens, p.num_heads, p.projection_dim, [p.projection_dim * 2, p.projection_dim],
            p.dropout_rate, attention=attention,
        )
    x = layers.LayerNormalization(epsilon=1e-6)(tokens)
    x = layers.Flatten()(x)
    x = layers.Dropout(p.head_dropout_rate)(x)
    x = mlp(x, p.mlp_head_units, p.head_dropout_rate)
    # float32 logits, whatever the dtype policy: the loss and the metrics read them
    logits = layers.Dense(num_classes, dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


# book/vit.ipynb, cell 36 ("What the heads look at")
def attention_scores(model, images, attention_layers=None):
    """Attention weights of each attention layer of ``model`` on ``images``.

    Returns one float32 array per layer (whatever the model's precision),
    (batch, heads, tokens, tokens), each row summing to 1. By default the
    layers are the model's MultiHeadAttention layers; any layer called as
    ``layer(query, value)`` that accepts ``return_attention_scores=True`` can
    be given instead.
    """
    if attention_layers is None:
        attention_layers = [
            layer for layer in model.layers if isinstance(layer, layers.MultiHeadAttention)
        ]
    probe = keras.Model(model.input, [layer.input[0] for layer in attention_layers])
    queries = probe(images, training=False)
    if len(attention_layers) == 1:
        queries = [queries]
    scores = []
    for layer, query in zip(attention_layers, queries):
        _, weights = layer(query, query, return_attention_scores=True, training=False)
        scores.append(ops.convert_to_numpy(ops.cast(weights, "float32")))
    return scores


def mean_attention_distance(scores, grid_size, patch_size):
    """Per head, the attention-weighted distance in pixels between query and key patches.

    ``scores``: (batch, heads, N, N) with N = grid_size**2 tokens in row-major
    grid order. Returns (heads,).
    """
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    centres = np.stack([rows, cols], axis=-1) * patch_size
    distance = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    return (scores * distance).sum(axis=-1).mean(axis=(0, 2))


# The values of the parameters cell of book/vit.ipynb: the full-size recipe.
DEFAULTS = {
    'dataset': 'cifar100',
    'n_train': 0,
    'n_test': 0,
    'validation_split': 0.1,
    'image_size': 72,
    'patch_size': 6,
    'projection_dim': 64,
    'num_heads': 4,
    'transformer_layers': 8,
    'mlp_head_units': [2048, 1024],
    'dropout_rate': 0.1,
    'head_dropout_rate': 0.5,
    'learning_rate': 0.001,
    'weight_decay': 0.0001,
    'weight_decay_mode': 'per_step',
    'lr_schedule': 'constant',
    'epochs': 100,
    'batch_size': 256,
    'seed': 42,
    'data_parallel': False,
    'precision': 'float32',
    'results_dir': 'results',
}
