"""Three rewrites of a TensorFlow training step, timed against the unchanged step.

The measurement behind the intro's "Three more tries on TensorFlow, none kept"
(`results.json` beside this file). Each model is timed with the benchmark's own
`bench_model` in five modes, round after round, so that every mode sees the
shared machine's busy and quiet spells alike:

- unchanged: the notebooks' step;
- dense-2d: every `Dense` on a sequence as one 2-D product, then bias and activation
  (the form in which oneDNN can fold the bias and the GELU into the product);
- no-dropout: every `Dropout` layer passes its input through (prices the random bits);
- xla: the step compiled with XLA (`jit_compile=True`);
- xla-no-dropout: both.

The rewrites patch the layers' `call` for the run only; nothing here is used by the book.

    KERAS_BACKEND=tensorflow python runs/bench/tensorflow-tries/tries.py \\
        --profile full --models cct vit --steps 3 --rounds 2 --output results.json
"""

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from keras import ops  # noqa: E402

from helpers.book import bench  # noqa: E402

DENSE_CALL = keras.layers.Dense.call
DROPOUT_CALL = keras.layers.Dropout.call


def dense_as_2d_product(self, inputs, training=None):
    if len(inputs.shape) <= 2:
        return DENSE_CALL(self, inputs, training)
    leading = ops.shape(inputs)[:-1]
    x = ops.matmul(ops.reshape(inputs, (-1, inputs.shape[-1])), self.kernel)
    if self.bias is not None:
        x = ops.add(x, self.bias)
    if self.activation is not None:
        x = self.activation(x)
    return ops.reshape(x, (*leading, self.units))


def no_dropout(self, inputs, training=False):
    return inputs


# mode: (Dense call, Dropout call, jit_compile)
MODES = {
    "unchanged": (DENSE_CALL, DROPOUT_CALL, "auto"),
    "dense-2d": (dense_as_2d_product, DROPOUT_CALL, "auto"),
    "no-dropout": (DENSE_CALL, no_dropout, "auto"),
    "xla": (DENSE_CALL, DROPOUT_CALL, True),
    "xla-no-dropout": (DENSE_CALL, no_dropout, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--models", nargs="+", default=["cct", "vit"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default="results.json")
    args = parser.parse_args()
    configs = bench.model_configs(argparse.Namespace(
        models=args.models, profile=args.profile, backend=None, batch_size=None,
        jit_compile="auto"))
    results = []
    for round_ in range(args.rounds):
        for name, parameters in configs.items():
            for mode, (dense_call, dropout_call, jit_compile) in MODES.items():
                keras.layers.Dense.call, keras.layers.Dropout.call = dense_call, dropout_call
                timed = bench.bench_model(name, parameters, batch_size=parameters["batch_size"],
                                          steps=args.steps, warmup=1, repeats=2,
                                          jit_compile=jit_compile)
                results.append({"round": round_, "model": name, "mode": mode,
                                "ips": timed["images_per_second"]})
                print(round_, name, mode, f"{timed['images_per_second']:.1f} images/s", flush=True)
    with open(args.output, "w") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
