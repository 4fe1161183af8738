"""The ViT notebook's reusable cells (book/vit.ipynb), exported by ``python -m helpers.export``.

Do not edit: edit the ``# @save`` cells of book/vit.ipynb and export again.
"""

import keras
from keras import layers, ops


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
        attention = layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, dropout=dropout_rate)
    h = layers.LayerNormalization(epsilon=1e-6)(x)
    x = layers.Add()([x, attention(h, h)])
    h = layers.LayerNormalization(epsilon=1e-6)(x)
    return layers.Add()([x, mlp(h, mlp_units, dropout_rate)])


def create_vit_classifier(
    input_shape,
    num_classes,
    augmentation,
    image_size,
    patch_size,
    projection_dim,
    num_heads,
    transformer_layers,
    mlp_head_units,
    dropout_rate=0.1,
    head_dropout_rate=0.5,
    tokenizer=None,
    attention_factory=None,
    name="vit",
):
    """The ViT classifier: augmentation, tokens, transformer blocks, MLP head, logits.

    ``tokenizer`` (a layer: images -> tokens) replaces Patches + PatchEncoder and
    ``attention_factory`` (a callable returning a new attention layer) replaces
    the blocks' ``MultiHeadAttention``; the SPT + LSA notebook uses both.
    """
    num_patches = (image_size // patch_size) ** 2
    inputs = keras.Input(shape=input_shape)
    x = augmentation(inputs)
    if tokenizer is None:
        tokens = PatchEncoder(num_patches, projection_dim)(Patches(patch_size)(x))
    else:
        tokens = tokenizer(x)
    for _ in range(transformer_layers):
        attention = attention_factory() if attention_factory else None
        tokens = transformer_block(
            tokens, num_heads, projection_dim, [projection_dim * 2, projection_dim],
            dropout_rate, attention=attention,
        )
    x = layers.LayerNormalization(epsilon=1e-6)(tokens)
    x = layers.Flatten()(x)
    x = layers.Dropout(head_dropout_rate)(x)
    x = mlp(x, mlp_head_units, head_dropout_rate)
    logits = layers.Dense(num_classes)(x)
    return keras.Model(inputs, logits, name=name)
