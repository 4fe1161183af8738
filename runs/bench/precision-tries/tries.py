"""Per-layer precision on TensorFlow: which layers compute in bfloat16, timed.

The measurement behind the Performance page's "Per-layer precision" table
(`results.json` beside this file). Each model is timed with the benchmark's own
`bench_model` in four modes, mode after mode within a round, so that every mode
sees the shared machine's busy and quiet spells alike:

- float32: every layer in float32 (the notebooks' default);
- mixed_bfloat16: every layer computes in bfloat16, weights in float32 (Keras's policy);
- normalization-float32: mixed_bfloat16, but layer and batch normalization
  compute in float32 (bfloat16 statistics are slower on some CPUs);
- products-bfloat16: float32, but the layers whose work is matrix products
  (Dense, EinsumDense, Conv2D, MultiHeadAttention) compute in bfloat16.

The per-layer modes give those classes a `dtype` policy when they are made,
through a wrapped `__init__` for the run only; nothing here is used by the book.
A model whose own code adds a layer's output to a tensor of the other type
cannot run a mode as is (it would need casts in its code): the record says so
in an `error` field instead of a speed.

    KERAS_BACKEND=tensorflow python runs/bench/precision-tries/tries.py \\
        --profile cifar10-cpu --models vit perceiver cct --rounds 3 --output results.json
"""

import argparse
import contextlib
import json
import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

from helpers import papers  # noqa: E402
from helpers.book import bench  # noqa: E402
from helpers.book.runner import profile_parameters  # noqa: E402

NORMALIZATION = (keras.layers.LayerNormalization, keras.layers.BatchNormalization)
PRODUCTS = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv2D,
            keras.layers.MultiHeadAttention)

# mode: (the global policy, the classes given another policy, that policy)
MODES = {
    "float32": ("float32", (), None),
    "mixed_bfloat16": ("mixed_bfloat16", (), None),
    "normalization-float32": ("mixed_bfloat16", NORMALIZATION, "float32"),
    "products-bfloat16": ("float32", PRODUCTS, "mixed_bfloat16"),
}


@contextlib.contextmanager
def made_with(classes, policy):
    """Layers of ``classes`` made inside the block take ``policy`` as their dtype."""
    originals = {cls: cls.__init__ for cls in classes}

    def wrap(original):
        def __init__(self, *args, **kwargs):
            kwargs["dtype"] = policy
            original(self, *args, **kwargs)
        return __init__

    for cls, original in originals.items():
        cls.__init__ = wrap(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.__init__ = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cifar10-cpu")
    parser.add_argument("--models", nargs="+", default=["vit", "perceiver", "cct"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="results.json")
    args = parser.parse_args()
    configs = {name: profile_parameters(name, args.profile) for name in args.models}
    results = []
    for round_ in range(args.rounds):
        for name, parameters in configs.items():
            for mode, (policy, classes, other) in MODES.items():
                keras.config.set_dtype_policy(policy)
                try:
                    with made_with(classes, other):
                        batch = {**papers.defaults(name), **parameters}["batch_size"]
                        timed = bench.bench_model(name, parameters, batch_size=batch,
                                                  steps=args.steps, warmup=1, repeats=2,
                                                  jit_compile="auto")
                except (TypeError, ValueError) as error:
                    # a layer left in one type hands its output to code that adds it
                    # to a tensor of the other: the model needs casts of its own
                    message = [re.sub(r"\x1b\[[0-9;]*m|\[[0-9;]*m", "", line).strip()
                               for line in str(error).splitlines() if line.strip()]
                    failure = next((line for line in message if "does not match" in line),
                                   message[-1])
                    results.append({"round": round_, "model": name, "mode": mode,
                                    "error": failure.strip()})
                    print(round_, name, mode, "failed:", failure.strip(), flush=True)
                    continue
                finally:
                    keras.config.set_dtype_policy("float32")
                    keras.backend.clear_session()
                results.append({"round": round_, "model": name, "mode": mode,
                                **{k: timed[k] for k in ("images_per_second",
                                                         "images_per_second_min",
                                                         "images_per_second_max")}})
                print(round_, name, mode, f"{timed['images_per_second']:.1f} images/s",
                      flush=True)
    from helpers.harness.records import runtime

    record = {"runtime": runtime(), **bench.provenance(), "profile": args.profile,
              "steps": args.steps, "rounds": args.rounds, "modes": list(MODES),
              "results": results}
    with open(args.output, "w") as file:
        json.dump(record, file, indent=1)


if __name__ == "__main__":
    main()
