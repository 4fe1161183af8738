"""Training-step throughput of the book's five models, on random data.

    python -m helpers.book.bench                                  # all five, full size
    python -m helpers.book.bench --backend jax --dtype-policy mixed_bfloat16
    python -m helpers.book.bench --models vit --dtype-policy float32 mixed_bfloat16   # a speedup
    python -m helpers.book.bench --models vit cct --batch-size 64 --jit-compile false
    python -m helpers.book.bench --profile smoke --steps 3 --repeats 2   # a quick try
    python -m helpers.book.bench --backend jax --cpu-devices 2 --data-parallel off on

Each model is built at its notebook's default configuration (``--profile
smoke`` for the small ones of ``profiles.yml``) by ``helpers.papers.build``, compiled
with the notebook's optimizer, and trained on random images and labels of its
dataset's shape: ``--warmup`` epochs of ``--steps`` steps first (compilation,
autotuning), then ``--repeats`` timed epochs. The figure is the median over
the timed epochs of images per second; the spread (min to max) is printed
too. Peak device memory is read where the backend reports it
(``helpers.harness.measure``: PyTorch and TensorFlow on a GPU), and FLOPs per image
are XLA's count (``helpers.book.flops``). Given several ``--dtype-policy``
values, each model is timed under each in turn, in the same run, and the
table gives each policy's speedup over the first one named.

Using every core on a CPU: ``--cpu-devices N`` splits the CPU into N devices
(JAX: ``XLA_FLAGS``, see ``helpers.book.runner.cpu_device_flags``; TensorFlow: N logical CPU
devices), and ``--data-parallel on`` trains each model on all of them
(``helpers.harness.distribute``: each batch is split over the devices, the
gradients are averaged). ``--data-parallel off on`` times both, one after the
other, and gives the speedup of the second. On JAX a CPU's cores otherwise
mostly take turns: its compiled step runs one operation after another.

How close each model comes to the machine: the run first measures the
matrix-multiply peaks of the backend (``matmul_peak``: square float32 and
bfloat16 products, and float16 ones under that mixed policy), then prints each
model's achieved FLOP/s (a training step costs about three forward passes: the
forward, and a backward pass of twice its work) and that as a fraction of the
peak of the type its layers compute in (the "peak of" column). It also
times the compiled training step alone (``train_on_batch`` on a batch already
on the device) and prints the share of a ``fit`` step spent outside it:
slicing and converting the NumPy batch, callbacks, the loop.

A table goes to stdout and everything (options, environment, every timing) to
a JSON file (``--output``, default ``_build/bench/<backend>.json``).
This is a measurement to read, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
# helpers.harness.feed.FEEDS, spelled out: importing that module imports Keras,
# which must wait for --backend (a test checks the two agree).
FEEDS = ("auto", "arrays", "prefetch")
DATA_PARALLEL = {"off": False, "on": True}  # --data-parallel -> helpers.harness.distribute


def split_cpu(backend: str, devices: int) -> None:
    """Make the CPU ``devices`` devices for ``backend``: before Keras is imported
    for JAX (``XLA_FLAGS``), before TensorFlow runs anything for TensorFlow."""
    from helpers.book.runner import with_cpu_devices

    if backend == "jax":
        os.environ["XLA_FLAGS"] = with_cpu_devices(os.environ.get("XLA_FLAGS"), devices)
    elif backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    else:
        raise ValueError(f"--cpu-devices works on JAX and TensorFlow, not {backend}")


def provenance() -> dict:
    """Where and when a measurement was taken: the machine (CPU model, cores,
    memory) and the date and time (UTC), for the records the book quotes."""
    from datetime import datetime, timezone

    from helpers.book.publish import machine

    return {"machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Seconds of each epoch's training batches."""

        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # Keras has turned the epoch's metrics into numbers by now, which
            # waits for the device to finish the epoch's steps.
            self.seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


TRAINING_FLOPS_PER_FORWARD = 3  # forward + backward (about twice the forward's work)


def matmul_peak(dtype: str = "float32", size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of the backend's best ``size`` x ``size`` matrix product in ``dtype``.

    Run as Keras runs the book's training steps by default: XLA on JAX; on
    TensorFlow, XLA where a GPU is present and otherwise TensorFlow's own kernel
    in a graph (Keras's ``jit_compile="auto"`` turns XLA off on a CPU-only
    machine); the eager ATen kernel on PyTorch. The best of ``repeats`` products
    after a warm-up.
    """
    import keras
    import numpy as np
    from keras import ops

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    a = ops.convert_to_tensor(rng.standard_normal((size, size)), dtype=dtype)
    b = ops.convert_to_tensor(rng.standard_normal((size, size)), dtype=dtype)
    if backend == "tensorflow":
        import tensorflow as tf

        xla = bool(tf.config.list_physical_devices("GPU"))
        product = tf.function(lambda x, y: tf.matmul(x, y), jit_compile=xla)
        wait = lambda out: out.numpy()  # noqa: E731
    elif backend == "jax":
        import jax

        product = jax.jit(lambda x, y: x @ y)
        wait = lambda out: out.block_until_ready()  # noqa: E731
    else:
        import torch

        product = torch.matmul
        wait = lambda out: out.sum().item()  # noqa: E731
    wait(product(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        wait(product(a, b))
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def compiled_model(name: str, parameters: dict, *, images: int, jit_compile="auto",
                   seed: int = 0):
    """Paper ``name``'s model built by ``helpers.papers.build`` from ``parameters``
    (missing names take the notebook's defaults) and compiled with the notebook's
    optimizer, with ``images`` random float32 images and integer labels of its
    dataset's shape: ``(model, images, labels)``."""
    import keras
    import numpy as np

    from helpers import papers
    from helpers.harness.data import dataset_shape

    parameters = {**papers.defaults(name), **parameters}
    input_shape, num_classes = dataset_shape(parameters["dataset"])
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (images, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, images).astype("int32")
    keras.utils.set_random_seed(seed)
    model = papers.build(name, parameters, x[:256].astype("uint8"), num_classes)
    model.compile(
        optimizer=papers.optimizer(name, parameters),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model, x, y


_MIRRORED = []  # the TensorFlow run's one MirroredStrategy, once made


@contextlib.contextmanager
def _data_parallel(enabled: bool):
    """``helpers.harness.distribute.data_parallel``, except that on TensorFlow every
    model of the run trains under one ``MirroredStrategy``: a second strategy in the
    same process numbers its all-reduces from the start again, and TensorFlow then
    matches the new model's gradients with the last model's and stops ("Shape
    mismatch in the collective instance"). A notebook makes one strategy
    (``use_data_parallel``)."""
    import keras

    from helpers.harness import distribute

    if not (enabled and keras.backend.backend() == "tensorflow"):
        with distribute.data_parallel(enabled) as devices:
            yield devices
        return
    import tensorflow as tf

    devices = distribute.local_devices()
    if not _MIRRORED:
        _MIRRORED.append(tf.distribute.MirroredStrategy(devices))
    with _MIRRORED[0].scope():
        yield devices


def bench_model(name: str, parameters: dict, *, batch_size: int, steps: int, warmup: int,
                repeats: int, jit_compile, seed: int = 0, feed: str = "auto",
                data_parallel: bool = False) -> dict:
    """Time ``repeats`` epochs of ``steps`` training steps of one model; returns a result dict.

    The model is paper ``name``'s, built by ``helpers.papers.build`` from
    ``parameters`` (missing names take the notebook's defaults) and compiled
    with the notebook's optimizer (``helpers.papers.optimizer``), and fed
    as ``train_and_evaluate`` feeds it (``helpers.harness.feed``). With
    ``data_parallel``, it is built and trained on every local device
    (``helpers.harness.distribute``).
    """
    import keras

    from helpers.harness import distribute

    with _data_parallel(data_parallel) as devices:
        result = _time_training(name, parameters, batch_size=batch_size, steps=steps,
                                warmup=warmup, repeats=repeats, jit_compile=jit_compile,
                                seed=seed, feed=feed, replicas=distribute.replicas())
    result["data_parallel"] = data_parallel
    result["devices"] = len(devices)
    keras.backend.clear_session()
    return result


def _time_training(name, parameters, *, batch_size, steps, warmup, repeats, jit_compile,
                   seed, feed, replicas) -> dict:
    """``bench_model``'s measurement, inside whatever distribution is in force."""
    import keras

    from helpers.harness.feed import ShuffledBatches, resolve_feed
    from helpers.harness.measure import memory_source, peak_memory_bytes

    if batch_size % replicas:
        raise ValueError(f"batch size {batch_size} does not split over {replicas} devices")
    model, images, labels = compiled_model(name, parameters, images=steps * batch_size,
                                           jit_compile=jit_compile, seed=seed)
    timer = _epoch_timer()

    feed = resolve_feed(feed, replicas)
    if feed == "prefetch":
        data = {"x": ShuffledBatches(images, labels, batch_size, seed=seed)}
    else:
        data = {"x": images, "y": labels, "batch_size": batch_size}

    def train():
        model.fit(**data, epochs=warmup + repeats, verbose=0, callbacks=[timer])

    peak = peak_memory_bytes(train)
    timed = timer.seconds[warmup:]

    # The compiled step alone: one batch already converted, no data adapter or callbacks.
    x = keras.ops.convert_to_tensor(images[:batch_size])
    y = keras.ops.convert_to_tensor(labels[:batch_size])
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    step_alone = (time.perf_counter() - start) / steps
    rates = [steps * batch_size / s for s in timed]
    result = {
        "model": name,
        "parameter_count": int(model.count_params()),
        "batch_size": batch_size,
        "feed": feed,
        "steps": steps,
        "warmup_epochs": warmup,
        "repeats": repeats,
        "images_per_second": statistics.median(rates),
        "images_per_second_min": min(rates),
        "images_per_second_max": max(rates),
        "step_milliseconds": 1000 * statistics.median(timed) / steps,
        "compiled_step_milliseconds": 1000 * step_alone,
        "outside_step_fraction": max(0.0, 1 - step_alone * steps / statistics.median(timed)),
        "warmup_seconds": sum(timer.seconds[:warmup]),
        "epoch_seconds": timer.seconds,
        "peak_memory_bytes": peak,
        "memory_source": memory_source(),
    }
    return result


def add_peak_fraction(result: dict, peak_flops: float) -> None:
    """Add the achieved training FLOP/s and its fraction of ``peak_flops`` (needs the FLOP count)."""
    if result.get("flops_per_image") is None:
        return
    achieved = TRAINING_FLOPS_PER_FORWARD * result["flops_per_image"] * result["images_per_second"]
    result["achieved_flops_per_second"] = achieved
    result["peak_fraction"] = achieved / peak_flops


def add_speedups(results: list[dict]) -> None:
    """Add each result's ``speedup``: its images/s over those of the first result of
    the same model (the first dtype policy and data-parallel setting timed), 1.0
    for that first one."""
    first = {}
    for result in results:
        base = first.setdefault(result["model"], result["images_per_second"])
        result["speedup"] = result["images_per_second"] / base


def format_table(results: list[dict]) -> str:
    """The printed table: one line per model, dtype policy and number of devices."""
    header = (f"{'model':<10} {'parameters':>11} {'GFLOPs/img':>10} {'batch':>5} "
              f"{'policy':>14} {'devices':>7} {'images/s':>10} {'(min-max)':>15} "
              f"{'speedup':>7} {'ms/step':>9} "
              f"{'GFLOP/s':>8} {'of peak':>7} {'peak of':>8} {'outside':>7} {'peak MiB':>9}")
    lines = [header, "-" * len(header)]
    for r in results:
        spread = f"{r['images_per_second_min']:.0f}-{r['images_per_second_max']:.0f}"
        peak = "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**20:.0f}"
        flops = "-" if r.get("flops_per_image") is None else f"{r['flops_per_image'] / 1e9:.3f}"
        achieved = ("-" if r.get("achieved_flops_per_second") is None
                    else f"{r['achieved_flops_per_second'] / 1e9:.1f}")
        fraction = "-" if r.get("peak_fraction") is None else f"{100 * r['peak_fraction']:.0f}%"
        outside = f"{100 * r['outside_step_fraction']:.0f}%"
        speedup = "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x"
        lines.append(
            f"{r['model']:<10} {r['parameter_count']:>11,} {flops:>10} {r['batch_size']:>5} "
            f"{r.get('dtype_policy', '-'):>14} {r.get('devices', 1):>7} "
            f"{r['images_per_second']:>10.1f} {spread:>15} "
            f"{speedup:>7} {r['step_milliseconds']:>9.1f} "
            f"{achieved:>8} {fraction:>7} {r.get('peak_dtype', '-'):>8} {outside:>7} {peak:>9}"
        )
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose the models and how they run (shared with
    ``helpers.book.breakdown``): models, backend, profile, batch size, jit_compile."""
    from helpers.papers import MODELS

    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
    parser.add_argument("--profile", default="full",
                        help="configurations: full (the notebooks' defaults), or another "
                             "profile of profiles.yml (smoke, cifar10-cpu)")
    parser.add_argument("--batch-size", type=_positive,
                        help="images per step (default: each notebook's batch_size)")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                        help="compiled training steps: XLA on TensorFlow and JAX, "
                             "torch.compile on PyTorch with true; auto is Keras's "
                             "(XLA on JAX, and on TensorFlow only with a GPU)")


JIT_COMPILE = {"auto": "auto", "true": True, "false": False}  # --jit-compile -> compile()


def model_configs(args: argparse.Namespace) -> dict | None:
    """Each model of ``args.models`` with its parameters in ``args.profile``; None,
    the error printed, where ``profiles.yml`` has no such profile."""
    from helpers.book.runner import profile_parameters

    try:
        return {name: profile_parameters(name, args.profile) for name in args.models}
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Median training throughput of the book's models on random data."
    )
    add_model_options(parser)
    parser.add_argument("--dtype-policy", nargs="+", choices=DTYPE_POLICIES, default=["float32"],
                        help="Keras dtype policy: mixed precision computes in 16 bits; with "
                             "several, each model is timed under each, and the table gives "
                             "each one's speedup over the first")
    parser.add_argument("--cpu-devices", type=_positive,
                        help="split the CPU into this many devices (JAX and TensorFlow; "
                             "for --data-parallel on without accelerators)")
    parser.add_argument("--data-parallel", nargs="+", choices=DATA_PARALLEL, default=["off"],
                        help="on: split each batch over every local device "
                             "(helpers.harness.distribute); 'off on' times both")
    parser.add_argument("--feed", choices=FEEDS, default="auto",
                        help="how batches reach the model (helpers.harness.feed): "
                             "fit on the arrays, or batches prepared ahead in threads")
    parser.add_argument("--steps", type=_positive, default=20, help="training steps per epoch")
    parser.add_argument("--warmup", type=_positive, default=1, help="untimed epochs first")
    parser.add_argument("--repeats", type=_positive, default=5, help="timed epochs")
    parser.add_argument("--no-flops", action="store_true", help="skip counting FLOPs")
    parser.add_argument("--output", type=Path, help="JSON file (default _build/bench/<backend>.json)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != args.backend:
            print("error: --backend must be chosen before Keras is imported", file=sys.stderr)
            return 2
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    parallel = list(dict.fromkeys(args.data_parallel))
    if backend == "torch" and (args.cpu_devices or "on" in parallel):
        print("error: --cpu-devices and --data-parallel on work on JAX and TensorFlow; "
              "Keras has no single-process data-parallel training on PyTorch", file=sys.stderr)
        return 2
    if args.cpu_devices and backend == "jax":
        split_cpu(backend, args.cpu_devices)
    import keras

    backend = keras.backend.backend()  # also read from Keras's config file
    if args.cpu_devices and backend == "tensorflow":
        split_cpu(backend, args.cpu_devices)

    from helpers.book.flops import models_flops
    from helpers.harness.records import describe_runtime, runtime
    from helpers.harness.run import dtype_policy

    configs = model_configs(args)
    if configs is None:
        return 2
    jit = JIT_COMPILE[args.jit_compile]
    print(describe_runtime(), flush=True)
    policies = list(dict.fromkeys(args.dtype_policy))
    print(f"profile {args.profile}, dtype policy {' then '.join(policies)}, data-parallel "
          f"{' then '.join(parallel)}, jit_compile "
          f"{args.jit_compile}, feed {args.feed}, {args.warmup} warm-up + {args.repeats} "
          f"timed epochs of {args.steps} steps", flush=True)

    compute_dtypes = {policy: keras.DTypePolicy(policy).compute_dtype for policy in policies}
    # Both peaks, whatever the policies: a CPU with bfloat16 matrix units (AMX) multiplies
    # bfloat16 several times faster, and a model's step is judged against the peak of
    # the precision it computes in.
    peaks = {dtype: matmul_peak(dtype)
             for dtype in dict.fromkeys(("float32", "bfloat16", *compute_dtypes.values()))}
    print("matmul peak: " + ", ".join(f"{dtype} {flops / 1e9:.0f} GFLOP/s"
                                      for dtype, flops in peaks.items()), flush=True)
    results = []
    for name, parameters in configs.items():
        batch_size = args.batch_size or parameters["batch_size"]
        for policy in policies:
            for setting in parallel:
                print(f"== {name}: batch {batch_size}, {policy}, data-parallel {setting} ...",
                      flush=True)
                with dtype_policy(policy):
                    result = bench_model(name, parameters, batch_size=batch_size,
                                         steps=args.steps, warmup=args.warmup,
                                         repeats=args.repeats, jit_compile=jit, feed=args.feed,
                                         data_parallel=DATA_PARALLEL[setting])
                result["dtype_policy"] = policy
                print(f"   {result['images_per_second']:.1f} images/s on {result['devices']} "
                      f"device(s) (warm-up {result['warmup_seconds']:.1f} s)", flush=True)
                results.append(result)
    add_speedups(results)

    if not args.no_flops:
        print("== counting FLOPs (XLA, on the JAX backend)", flush=True)
        specs = [{"name": name, "parameters": p} for name, p in configs.items()]
        counts = dict(zip(configs, models_flops(specs)))
        for result in results:  # the float32 count: the same work in any precision
            result["flops_per_image"] = counts[result["model"]]
            dtype = compute_dtypes[result["dtype_policy"]]
            add_peak_fraction(result, peaks[dtype])
            result["peak_dtype"] = dtype

    print()
    print(format_table(results))
    output = args.output or Path("_build") / "bench" / f"{backend}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "runtime": runtime(),
        **provenance(),
        "options": {
            "profile": args.profile, "dtype_policies": policies,
            "data_parallel": parallel, "cpu_devices": args.cpu_devices,
            "jit_compile": args.jit_compile, "feed": args.feed, "steps": args.steps,
            "warmup": args.warmup, "repeats": args.repeats, "batch_size": args.batch_size,
        },
        "parameters": configs,
        "matmul_peak_flops_per_second": peaks,
        "results": results,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
