"""The book's five models, rebuilt from a notebook's parameters.

The benchmark (``helpers.bench``) and the results page need each notebook's
model without running the notebook: to time its training step and to count
its FLOPs. ``build_model(name, parameters, input_shape, num_classes)`` builds
the model the way the notebook does (same builder, same augmentation layers,
same arguments), from a complete parameter dict: the notebook's own defaults
(``notebook_defaults``), a profile's values on top of them
(``profile_parameters``), or the ``parameters`` field of a result record.
``optimizer_for`` gives the optimizer the notebook trains with.

The defaults live in one place, the parameters cell of each committed notebook;
they are read from there. A test checks that the model rebuilt from a record
has exactly the parameter count that the notebook recorded.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np

MODELS = ("vit", "spt_lsa", "perceiver", "cct", "shiftvit")
TITLES = {
    "vit": "ViT",
    "spt_lsa": "SL-ViT (SPT + LSA)",
    "perceiver": "Perceiver",
    "cct": "CCT",
    "shiftvit": "ShiftViT",
}
# Image shape and classes of the named datasets, so that a model can be built
# for a dataset without loading it.
DATASET_SHAPES = {
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "digits": ((32, 32, 3), 10),
}
ROOT = Path(__file__).resolve().parents[1]


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")


def notebook_defaults(name: str, source: Path = ROOT) -> dict:
    """The defaults of ``book/<name>.ipynb``'s parameters cell (the full-size recipe)."""
    _check_name(name)
    notebook = json.loads((source / "book" / f"{name}.ipynb").read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell["metadata"].get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return {
                node.target.id: ast.literal_eval(node.value)
                for node in tree.body
                if isinstance(node, ast.AnnAssign) and node.value is not None
            }
    raise ValueError(f"book/{name}.ipynb has no cell tagged 'parameters'")


def profile_parameters(name: str, profile: str, source: Path = ROOT) -> dict:
    """The notebook's defaults with a profile of ``profiles.yml`` applied (``full``: none)."""
    import yaml

    profiles = yaml.safe_load((source / "profiles.yml").read_text())
    if profile not in profiles:
        raise ValueError(f"profile must be one of {', '.join(profiles)}, got {profile!r}")
    section = profiles[profile] or {}
    defaults = notebook_defaults(name, source)
    common = {k: v for k, v in (section.get("common") or {}).items() if k in defaults}
    return {**defaults, **common, **((section.get("notebooks") or {}).get(name) or {})}


def dataset_shape(parameters: dict) -> tuple[tuple[int, int, int], int]:
    """``(image_shape, num_classes)`` of the parameters' dataset (a named one)."""
    dataset = parameters["dataset"]
    if dataset not in DATASET_SHAPES:
        raise ValueError(
            f"dataset {dataset!r} has no known shape: pass input_shape and num_classes"
        )
    return DATASET_SHAPES[dataset]


def build_model(name: str, parameters: dict, input_shape=None, num_classes=None, x_sample=None):
    """The model of notebook ``name`` built from its complete ``parameters``.

    ``input_shape`` and ``num_classes`` default to those of the parameters'
    dataset. ``x_sample`` (images) is what the ViT-family's normalization
    adapts to; random images of the right shape are used without it, which
    changes no weight count, shape or FLOP.
    """
    _check_name(name)
    if input_shape is None or num_classes is None:
        input_shape, num_classes = dataset_shape(parameters)
    input_shape = tuple(int(n) for n in input_shape)
    p = parameters
    seed = p.get("seed")
    if x_sample is None:
        x_sample = np.random.default_rng(0).integers(0, 256, (8, *input_shape)).astype("uint8")

    from helpers.augment import augmentation_pipeline

    if name in ("vit", "spt_lsa"):
        augmentation = augmentation_pipeline(
            x_sample, image_size=p["image_size"], normalize="adapt",
            flip="horizontal", rotation=0.02, zoom=0.2, seed=seed,
        )
        args = (input_shape, num_classes, augmentation, p["image_size"], p["patch_size"],
                p["projection_dim"], p["num_heads"], p["transformer_layers"],
                p["mlp_head_units"], p["dropout_rate"], p["head_dropout_rate"])
        if name == "vit":
            from helpers.vit import create_vit_classifier

            return create_vit_classifier(*args)
        from helpers.spt_lsa import create_spt_lsa_classifier

        return create_spt_lsa_classifier(*args)
    if name == "perceiver":
        from helpers.perceiver import create_perceiver_classifier

        augmentation = augmentation_pipeline(
            x_sample, image_size=p["image_size"], normalize="adapt", flip="horizontal",
            zoom=0.2, seed=seed,
        )
        return create_perceiver_classifier(
            input_shape, num_classes, augmentation, p["image_size"], p["patch_size"],
            p["num_latents"], p["projection_dim"], p["num_heads"], p["num_transformer_blocks"],
            p["num_iterations"], p["cross_attention_heads"], p["position_encoding"],
            p["num_bands"], p["dropout_rate"], p["attention_dropout"],
        )
    if name == "cct":
        from helpers.cct import create_cct_classifier

        flip = p["flip"]
        augmentation = augmentation_pipeline(
            normalize="rescale", pad=p["crop_padding"], flip=None if flip == "none" else flip,
            seed=seed,
        )
        return create_cct_classifier(
            input_shape, num_classes, augmentation, conv_layers=p["conv_layers"],
            conv_channels=p["conv_channels"], projection_dim=p["projection_dim"],
            num_heads=p["num_heads"], transformer_layers=p["transformer_layers"],
            transformer_units=p["transformer_units"], positional_emb=p["positional_emb"],
            dropout_rate=p["dropout_rate"], stochastic_depth_rate=p["stochastic_depth_rate"],
            seed=seed,
        )
    from helpers.shiftvit import create_shiftvit_classifier

    augmentation = augmentation_pipeline(
        normalize="rescale", image_size=p["image_size"], crop_size=p["crop_size"],
        flip="horizontal", seed=seed,
    )
    return create_shiftvit_classifier(
        input_shape, num_classes, augmentation, p["patch_size"], p["projected_dim"],
        p["num_shift_blocks_per_stages"], p["num_div"], p["shift_pixel"],
        p["mlp_expand_ratio"], p["mlp_dropout_rate"], p["stochastic_depth_rate"],
        p["epsilon"],
    )


def optimizer_for(name: str, parameters: dict):
    """The optimizer notebook ``name`` trains with, at its initial learning rate."""
    import keras

    _check_name(name)
    rate, decay = parameters["learning_rate"], parameters["weight_decay"]
    if name == "perceiver":
        return keras.optimizers.Lamb(learning_rate=rate, weight_decay=decay)
    return keras.optimizers.AdamW(learning_rate=rate, weight_decay=decay)
