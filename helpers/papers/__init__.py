"""The five papers' layers and model builders, generated from the notebooks.

Each module here is written by ``python -m helpers.book.export`` from the
``# @save`` cells of its notebook (``book/<name>.ipynb``): edit the notebook,
then export. Each ends with ``DEFAULTS``, the values of the notebook's
parameters cell, and each defines exactly one function that builds the
paper's model from a notebook's parameters and the training images its
input normalization adapts to:

    build_vit(p, x_train, num_classes)          # helpers.papers.vit
    build_spt_lsa(p, x_train, num_classes)      # helpers.papers.spt_lsa
    build_perceiver(p, x_train, num_classes)    # helpers.papers.perceiver
    build_cct(p, x_train, num_classes)          # helpers.papers.cct
    build_shiftvit(p, x_train, num_classes)     # helpers.papers.shiftvit

The notebook's model cell defines it, and everything else that needs a model
(the benchmark, the FLOP count of the results page, the tests) calls the same
function through ``build``. ``layers`` holds a layer several papers use
(stochastic depth); it is written by hand.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping

import numpy as np

MODELS = ("vit", "spt_lsa", "perceiver", "cct", "shiftvit")
TITLES = {
    "vit": "ViT",
    "spt_lsa": "SL-ViT (SPT + LSA)",
    "perceiver": "Perceiver",
    "cct": "CCT",
    "shiftvit": "ShiftViT",
}


def _module(name: str):
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def builder(name: str):
    """The function that builds paper ``name``'s model (``build_<name>``)."""
    return getattr(_module(name), f"build_{name}")


def defaults(name: str):
    """The defaults of ``book/<name>.ipynb``'s parameters cell, as ``Parameters``.

    A copy: changing a list in it leaves the module's ``DEFAULTS`` alone.
    """
    from helpers.harness.parameters import Parameters

    return Parameters(copy.deepcopy(_module(name).DEFAULTS))


def build(name: str, p: Mapping | None = None, x_train=None, num_classes: int | None = None):
    """Paper ``name``'s model, built by its own builder.

    ``p`` defaults to the notebook's defaults (a partial mapping is completed
    with them). ``x_train`` and ``num_classes`` default to random images and
    the class count of ``p``'s dataset (a named one: ``helpers.harness.data``'s
    ``DATASET_SHAPES``); random images change no weight count, shape or FLOP.
    """
    from helpers.harness.data import dataset_shape
    from helpers.harness.parameters import Parameters

    p = Parameters({**defaults(name), **(p or {})})
    if x_train is None or num_classes is None:
        image_shape, classes = dataset_shape(p.dataset)
        if x_train is None:
            x_train = np.random.default_rng(0).integers(0, 256, (8, *image_shape), dtype="uint8")
        num_classes = classes if num_classes is None else num_classes
    return builder(name)(p, x_train, num_classes)


def optimizer(name: str, p: Mapping | None = None):
    """The optimizer paper ``name``'s notebook trains with, at its initial learning rate.

    A paper module that trains with something other than the book's default
    (AdamW, ``helpers.harness.train``) defines ``optimizer_factory(p)``, a
    callable that takes the learning rate; its notebook passes the same
    factory to ``run.train``.
    """
    from helpers.harness.parameters import Parameters
    from helpers.harness.train import adamw

    p = Parameters({**defaults(name), **(p or {})})
    factory = getattr(_module(name), "optimizer_factory", None)
    if factory is None:
        return adamw(p.learning_rate, p.weight_decay, p.get("weight_decay_mode", "lr_scaled"))
    return factory(p)(p.learning_rate)
