"""Plumbing shared by the notebooks of the book.

``data`` (datasets), ``augment`` (input pipelines as layers), ``train`` (the
training loop), ``records`` (result records and glue), ``plots`` (figures),
``explorers`` (widgets that work on the static site), ``parameters``
(parameter checks), ``measure`` (peak device memory of a call), ``vit`` and
``perceiver`` (the ViT and Perceiver notebooks' reusable cells, exported),
``export`` (the exporter), ``book`` (execute the notebooks, build the site),
``models`` (the five models rebuilt from a notebook's parameters), ``flops``
(FLOPs counted by XLA), ``bench`` (the training-throughput benchmark) and
``colab`` (the notebooks' Colab badge and setup cell).
"""

__version__ = "0.1.0"
