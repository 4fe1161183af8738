"""Checks of a notebook's parameters, run right after its parameters cell.

A notebook's parameters are the names annotated in its parameters cell
(``epochs: int = 100  # training epochs``); papermill may overwrite their
values, the annotations stay. ``collect`` reads them back, checks each value
against its annotation and checks the parameters every notebook shares (a
known dataset or an existing ``.npz``; epochs and batch size > 0; seed and
subset sizes >= 0; a validation fraction in [0, 1)); ``check`` applies a
notebook's own range rules. Every failure is one ``ValueError`` that names the parameter and what is allowed.
Used by every notebook.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable, Mapping

COMMON_PARAMETERS = ("dataset", "epochs", "batch_size", "seed", "n_train", "n_test", "results_dir")


def collect(namespace: Mapping, *, common: bool = True) -> dict:
    """The annotated parameters of a notebook namespace (``globals()``), type-checked.

    ``common=False`` is for a page that trains nothing (the results page): the
    parameters every training notebook shares are then neither required nor checked.
    """
    annotations = namespace.get("__annotations__", {})
    required = COMMON_PARAMETERS if common else ()
    missing = [name for name in required if name not in annotations]
    if missing:
        raise ValueError(f"the parameters cell must declare {', '.join(missing)}")
    values = {}
    for name, annotation in annotations.items():
        value = namespace[name]
        if not _matches(value, annotation):
            raise ValueError(
                f"parameter {name} must be {_describe(annotation)}, got {value!r} "
                f"({type(value).__name__})"
            )
        values[name] = float(value) if annotation is float else value
    if common:
        _check_common(values)
    return values


def _check_common(values: Mapping) -> None:
    """The rules of the parameters every notebook declares."""
    from helpers.data import DATASET_NAMES

    dataset = values["dataset"]
    if dataset not in DATASET_NAMES and not (dataset.endswith(".npz") and os.path.isfile(dataset)):
        raise ValueError(
            f"parameter dataset must be one of {', '.join(DATASET_NAMES)} or the path of an "
            f"existing .npz file, got {dataset!r}"
        )
    check(values, positive=["epochs", "batch_size"], non_negative=["seed", "n_train", "n_test"])
    if "validation_split" in values:
        check(values, fractions=["validation_split"])


def check(
    values: Mapping,
    *,
    positive: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    fractions: Iterable[str] = (),
    choices: Mapping[str, Iterable] | None = None,
) -> None:
    """Range checks: ``positive`` > 0, ``non_negative`` >= 0, ``fractions`` in [0, 1)."""
    for name in positive:
        _each(values, name, lambda v: v > 0, "> 0")
    for name in non_negative:
        _each(values, name, lambda v: v >= 0, ">= 0")
    for name in fractions:
        _each(values, name, lambda v: 0 <= v < 1, "in [0, 1)")
    for name, allowed in (choices or {}).items():
        allowed = tuple(allowed)
        if values[name] not in allowed:
            raise ValueError(
                f"parameter {name} must be one of {', '.join(map(repr, allowed))}, "
                f"got {values[name]!r}"
            )


def require(condition: bool, name: str, message: str) -> None:
    """Fail with ``parameter <name> <message>`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(f"parameter {name} {message}")


def _each(values, name, test, allowed):
    value = values[name]
    items = value if isinstance(value, (list, tuple)) else [value]
    if not all(test(item) for item in items):
        raise ValueError(f"parameter {name} must be {allowed}, got {value!r}")


def _matches(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(annotation) or (object,)
        return isinstance(value, (list, tuple)) and all(_matches(v, item_type) for v in value)
    if annotation is object:
        return True
    if isinstance(value, bool):
        return annotation is bool
    if annotation is float:
        return isinstance(value, (int, float))
    return isinstance(value, annotation)


def _describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(annotation) or (object,)
        return f"a list of {item_type.__name__}"
    return {int: "an integer", float: "a number", str: "a string", bool: "True or False"}.get(
        annotation, annotation.__name__
    )
