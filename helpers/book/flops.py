"""FLOPs per image of a model's forward pass, counted by XLA.

The count is XLA's cost analysis of the model's inference call on one image,
taken before optimization: a matrix product of (m, k) by (k, n) counts
2·m·k·n, every elementwise operation (normalization, softmax, activations,
the input pipeline's resize) one per output element. It is the same
definition for every model, and it needs no table of per-layer formulas that
custom layers (locality self-attention, cross-attention, shifts) would have
to keep up to date.

XLA's cost analysis is reached through JAX, so the count is always taken on
the JAX backend: in this process when Keras runs on JAX, otherwise in a child
process (``python -m helpers.book.flops``, ``KERAS_BACKEND=jax``) that builds
the models with their papers' own builders (``helpers.papers.build``). A
model has the same count whichever backend trains it.

    flops = models_flops([{"name": "vit", "parameters": record["parameters"],
                           "input_shape": [32, 32, 3], "num_classes": 100}])
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path


def jax_installed() -> bool:
    """Whether JAX, which takes the counts, can be imported here."""
    return importlib.util.find_spec("jax") is not None


def count_flops(model, input_shape) -> int:
    """FLOPs of ``model`` on one image of ``input_shape`` at inference (JAX backend only)."""
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError("count_flops needs the JAX backend; use models_flops from others")
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def forward(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    images = jax.ShapeDtypeStruct((1, *input_shape), "float32")
    cost = jax.jit(forward).lower(trainable, non_trainable, images).cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per computation
        cost = cost[0]
    return int(cost["flops"])


def _count_specs(specs: list[dict]) -> list[int]:
    """The counts of ``models_flops``, in this process (``count_flops``: JAX only)."""
    import keras
    import numpy as np

    from helpers import papers
    from helpers.harness.data import dataset_shape

    counts = []
    for spec in specs:
        parameters = spec.get("parameters") or {}
        input_shape, num_classes = spec.get("input_shape"), spec.get("num_classes")
        if input_shape is None or num_classes is None:
            dataset = parameters.get("dataset", papers.defaults(spec["name"]).dataset)
            known_shape, known_classes = dataset_shape(dataset)
            input_shape = known_shape if input_shape is None else input_shape
            num_classes = known_classes if num_classes is None else num_classes
        images = np.random.default_rng(0).integers(0, 256, (8, *input_shape), dtype="uint8")
        model = papers.build(spec["name"], parameters, images, num_classes)
        counts.append(count_flops(model, tuple(input_shape)))
        keras.backend.clear_session()
    return counts


def models_flops(specs: list[dict]) -> list[int]:
    """FLOPs per image of each ``{"name", "parameters"[, "input_shape", "num_classes"]}``.

    ``name`` is a paper of ``helpers.papers.MODELS`` and ``parameters`` its
    notebook's parameters (a record's ``parameters`` field, say; missing
    names take the notebook's defaults). ``input_shape`` and ``num_classes``
    default to those of the parameters' dataset (a named one). Each model is
    built by ``helpers.papers.build``, the paper's own builder.
    """
    import keras

    if keras.backend.backend() == "jax":
        return _count_specs(specs)
    # The child imports the same helpers, wherever this process found them (an
    # installed copy, or a checkout a notebook put on sys.path).
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    done = subprocess.run(
        [sys.executable, "-m", "helpers.book.flops"], input=json.dumps(specs), env=env,
        capture_output=True, text=True,
    )
    if done.returncode:
        raise RuntimeError(f"counting FLOPs on the JAX backend failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    """Read a JSON list of specs on stdin, print their FLOPs as a JSON list."""
    import keras

    if keras.backend.backend() != "jax":
        print("run with KERAS_BACKEND=jax", file=sys.stderr)
        return 2
    print(json.dumps(_count_specs(json.loads(sys.stdin.read()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
