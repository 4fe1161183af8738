"""Checks of a notebook's parameters, run right after its parameters cell (by ``start``).

A notebook's parameters are the names annotated in its parameters cell
(``epochs: int = 100  # training epochs``); papermill may overwrite their
values, the annotations stay. ``collect`` reads them back, checks each value
against its annotation and checks the parameters every notebook shares (a
known dataset, or an existing ``.npz``, image folder or ``.zip`` of one, which
are read later; epochs and batch size > 0; seed and
subset sizes >= 0; a validation fraction in [0, 1)) and those several
notebooks declare (a positive learning rate; a known schedule, weight-decay
mode or ``precision``; ...); ``check`` applies a notebook's own range rules.
Every failure is one ``ValueError`` that names the parameter and what is
allowed.

Papermill only warns when it is given a name the notebook does not declare,
and the notebook would then train its default model. ``collect`` looks at the
cell papermill injected (in IPython's input history, ``In``) and fails on any
name it assigns that the parameters cell does not declare, suggesting the
closest declared names (``undeclared``).

The collected values come back as ``Parameters``: a dict (JSON-ready, hashed
for the backup folder) whose values also read as attributes (``p.patch_size``).
"""

from __future__ import annotations

import ast
import difflib
import re
import typing
from collections.abc import Callable, Iterable, Mapping

COMMON_PARAMETERS = ("dataset", "epochs", "batch_size", "seed", "n_train", "n_test", "results_dir")
# The first line of the cell papermill injects after the parameters cell.
INJECTED_CELL_HEADER = "# Parameters"


class Parameters(dict):
    """A notebook's parameters: a plain dict whose values also read as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("parameters are read-only: change them in the parameters cell")


def injected_names(namespace: Mapping) -> list[str]:
    """Names assigned by the last cell papermill injected, read from IPython's ``In``.

    Empty outside IPython, or when no parameters were injected.
    """
    history = namespace.get("In")
    if not isinstance(history, (list, tuple)):
        return []
    for source in reversed(history):
        if isinstance(source, str) and source.lstrip().startswith(INJECTED_CELL_HEADER):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return []
            return [
                target.id
                for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)
            ]
    return []


def cell_defaults(namespace: Mapping) -> Parameters | None:
    """The values written in the notebook's parameters cell, before papermill's injection.

    Read from IPython's ``In``: the latest input that annotates every declared
    parameter. None outside IPython or when no such input is found.
    """
    declared = set(namespace.get("__annotations__", {}))
    history = namespace.get("In")
    if not declared or not isinstance(history, (list, tuple)):
        return None
    for source in reversed(history):
        if not isinstance(source, str) or ":" not in source:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        values = {
            node.target.id: node.value
            for node in tree.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and node.value is not None
        }
        if declared <= set(values):
            try:
                return Parameters({name: ast.literal_eval(values[name]) for name in values})
            except ValueError:
                return None
    return None


def closest(name: str, declared: Iterable[str], n: int = 3) -> list[str]:
    """The declared names most like ``name``: by spelling, or by a shared word
    (``latent_dim`` -> ``num_latents``). Only those nearly as close as the closest
    (within 0.1 of its score): ``projection_dim`` -> ``projected_dim``, not also
    ``precision``."""
    def words(text):
        return {w.rstrip("s") for w in re.split(r"[_\W]+", text.lower()) if len(w) > 1}

    scores = {}
    for candidate in declared:
        spelling = difflib.SequenceMatcher(None, name.lower(), candidate.lower()).ratio()
        shared = words(name) & words(candidate)
        overlap = len(shared) / max(len(words(name) | words(candidate)), 1)
        score = max(spelling, 0.5 + overlap / 2 if shared else 0.0)
        if score >= 0.6:
            scores[candidate] = score
    best = max(scores.values(), default=0.0)
    near = [c for c in scores if scores[c] >= best - 0.1]
    return sorted(near, key=lambda c: (-scores[c], c))[:n]


def undeclared(names: Iterable[str], declared: Iterable[str]) -> None:
    """Fail on the first of ``names`` that is not ``declared``, suggesting close ones."""
    declared = list(declared)
    for name in names:
        if name in declared:
            continue
        suggestions = closest(name, declared)
        hint = f"did you mean {' or '.join(suggestions)}? " if suggestions else ""
        raise ValueError(
            f"parameter {name} is not declared by this notebook: {hint}"
            f"the parameters are {', '.join(declared)}"
        )


def collect(namespace: Mapping, *, common: bool = True) -> Parameters:
    """The annotated parameters of a notebook namespace (``globals()``), type-checked.

    A name that papermill injected and the notebook does not declare fails
    first. ``common=False`` is for a page that trains nothing (the results
    page): the parameters every training notebook shares are then neither
    required nor checked.
    """
    annotations = namespace.get("__annotations__", {})
    undeclared(injected_names(namespace), annotations)
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
    _check_conventional(values)
    return Parameters(values)


def _check_common(values: Mapping) -> None:
    """The rules of the parameters every notebook declares."""
    from helpers.harness.data import DATASET_NAMES, is_dataset_path  # noqa: PLC0415

    dataset = values["dataset"]
    if dataset not in DATASET_NAMES and not is_dataset_path(dataset):
        raise ValueError(
            f"parameter dataset must be one of {', '.join(DATASET_NAMES)} or the path of an "
            f"existing .npz file, image folder or .zip of one, got {dataset!r}"
        )
    check(values, positive=["epochs", "batch_size"], non_negative=["seed", "n_train", "n_test"])
    if "validation_split" in values:
        check(values, fractions=["validation_split"])


# The values of ``precision``, Keras dtype policies: float32 throughout, or
# 16-bit compute with float32 weights (bfloat16; float16 with loss scaling).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Rules of parameters that several notebooks declare, applied wherever declared.
CONVENTIONAL = {
    "positive": ("learning_rate",),
    "non_negative": ("weight_decay",),
    "fractions": ("validation_split", "warmup_fraction", "label_smoothing"),
}


def _check_conventional(values: Mapping) -> None:
    from helpers.harness.train import SCHEDULES, WEIGHT_DECAY_MODES  # noqa: PLC0415

    rules = {kind: [n for n in names if n in values] for kind, names in CONVENTIONAL.items()}
    check(values, **rules)
    if "lr_schedule" in values:
        check(values, choices={"lr_schedule": SCHEDULES})
    if "weight_decay_mode" in values:
        check(values, choices={"weight_decay_mode": WEIGHT_DECAY_MODES})
    if "precision" in values:
        check(values, choices={"precision": PRECISIONS})


def names(spec: str | Iterable[str]) -> list[str]:
    """Parameter names given as a list or as one string separated by spaces."""
    return spec.split() if isinstance(spec, str) else list(spec)


def check(
    values: Mapping,
    *,
    positive: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    fractions: Iterable[str] = (),
    choices: Mapping[str, Iterable] | None = None,
) -> None:
    """Range checks: ``positive`` > 0, ``non_negative`` >= 0, ``fractions`` in [0, 1).

    Each list may also be one string of names separated by spaces.
    """
    for name in names(positive):
        _each(values, name, lambda v: v > 0, "> 0")
    for name in names(non_negative):
        _each(values, name, lambda v: v >= 0, ">= 0")
    for name in names(fractions):
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


Rule = tuple[str, Callable[[Parameters], bool], str | Callable[[Parameters], str]]


def apply_rules(values: Parameters, rules: Iterable[Rule]) -> None:
    """A notebook's own rules, each ``(name, test, message)``: ``test(values)`` must hold.

    ``message`` may name other parameters in braces (``"must divide
    image_size={image_size}"``) or be a function of the values; the failure
    reads ``parameter <name> <message>, got <value>``. Rules run after the range checks, so a test may
    divide by a parameter checked to be positive.
    """
    for name, test, message in rules:
        if not test(values):
            text = message(values) if callable(message) else message.format(**values)
            raise ValueError(f"parameter {name} {text}, got {values[name]!r}")


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
