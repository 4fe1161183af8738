"""One epoch of every full recipe, per backend and precision, in one JSON: the GPU script.

    python -m helpers.book.epoch_bench --output epochs.json                  # every backend here
    python -m helpers.book.epoch_bench --backends jax torch --budget 420     # a lent GPU
    python -m helpers.book.epoch_bench --profile smoke --steps 2 --budget 120  # a quick check

Made for a machine lent for a few minutes: it measures, in a budget of wall
time given up front, how long one training epoch of each notebook's full recipe
takes on each backend there, in ``float32`` and in ``mixed_bfloat16``. Nothing
is downloaded: the models are trained on random images of their dataset's
shape (``helpers.book.bench``), which costs the same time per step as the real
images, and the epoch's time is the number of steps an epoch of the recipe
takes (the training images left after its validation split, over its batch
size) times the measured time of one step. One epoch timed that way takes
seconds where a real epoch of the Perceiver could take minutes.

Each backend runs in a process of its own (Keras picks its backend when it is
first imported), one after the other, each with an equal share of the time
left. A worker writes each measurement as soon as it has it; a worker still
running at the end of its share is stopped, and what it wrote is kept. The
models not reached are listed as skipped, with the reason. The JSON holds the
machine, each backend's versions and devices, the matmul peaks and, per backend,
model and precision: images/s, milliseconds per step, the step count of an
epoch and the estimated epoch time in seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")
POLICIES = ("float32", "mixed_bfloat16")
# The training sets the notebooks' datasets have (before the validation split).
TRAINING_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "digits": 1_437}


def available_backends() -> list[str]:
    """The Keras backends whose framework is installed here, in BACKENDS' order."""
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def epoch_steps(parameters: dict) -> int:
    """Training steps in one epoch of a recipe: its training images after the
    validation split, over its batch size (the last, partial batch counts)."""
    images = parameters.get("n_train") or TRAINING_IMAGES[parameters["dataset"]]
    train = images - int(round(images * parameters.get("validation_split", 0.0)))
    return math.ceil(train / parameters["batch_size"])


def _worker(args: argparse.Namespace) -> int:
    """Time every model under every policy on this process's backend; one JSON
    line per result, appended to ``args.lines`` as soon as it is measured."""
    os.environ["KERAS_BACKEND"] = args.worker
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from helpers.book.bench import bench_model, matmul_peak
    from helpers.book.runner import profile_parameters
    from helpers.harness.records import runtime
    from helpers.harness.run import dtype_policy

    deadline = time.monotonic() + args.seconds
    lines = Path(args.lines)

    def write(entry: dict) -> None:
        with lines.open("a") as f:
            f.write(json.dumps({"backend": args.worker, **entry}) + "\n")

    info = runtime()
    peaks = {}
    for dtype in ("float32", "bfloat16"):
        try:
            peaks[dtype] = matmul_peak(dtype)
        except Exception as error:  # a backend or device without the type
            peaks[dtype] = None
            print(f"[{args.worker}] no {dtype} matmul peak: {error}", flush=True)
    write({"kind": "runtime", "runtime": info, "matmul_peak_flops_per_second": peaks})
    print(f"[{args.worker}] matmul peak: " + ", ".join(
        f"{d} {'-' if f is None else f'{f / 1e9:.0f}'} GFLOP/s" for d, f in peaks.items()),
        flush=True)

    last = 0.0  # seconds the last measurement took: the guess for the next one
    for name in args.models:
        parameters = profile_parameters(name, args.profile)
        steps = epoch_steps(parameters)
        for policy in args.policies:
            left = deadline - time.monotonic()
            if left < last:
                write({"kind": "skipped", "model": name, "dtype_policy": policy,
                       "reason": f"{left:.0f} s left of the backend's share, the last "
                                 f"measurement took {last:.0f} s"})
                continue
            start = time.monotonic()
            print(f"[{args.worker}] {name} {policy}: batch {parameters['batch_size']}, "
                  f"{steps} steps an epoch ...", flush=True)
            try:
                with dtype_policy(policy):
                    result = bench_model(name, parameters, batch_size=parameters["batch_size"],
                                         steps=args.steps, warmup=1, repeats=args.repeats,
                                         jit_compile="auto")
            except Exception as error:  # one model's failure must not cost the others
                write({"kind": "failed", "model": name, "dtype_policy": policy,
                       "error": f"{type(error).__name__}: {error}"})
                print(f"[{args.worker}]   failed: {error}", flush=True)
                keras.backend.clear_session()
                continue
            last = time.monotonic() - start
            step = result["step_milliseconds"] / 1000
            entry = {
                "kind": "result", "model": name, "dtype_policy": policy,
                "batch_size": result["batch_size"], "parameter_count": result["parameter_count"],
                "images_per_second": result["images_per_second"],
                "step_milliseconds": result["step_milliseconds"],
                "epoch_steps": steps, "epoch_seconds": steps * step,
                "timed_steps": args.steps * args.repeats,
                "warmup_seconds": result["warmup_seconds"],
                "peak_memory_bytes": result["peak_memory_bytes"],
                "measured_seconds": last,
            }
            write(entry)
            print(f"[{args.worker}]   {entry['images_per_second']:.0f} images/s, one epoch "
                  f"{entry['epoch_seconds']:.0f} s (measured in {last:.0f} s)", flush=True)
    return 0


def merge(lines: list[dict], *, options: dict, backends: list[str],
          stopped: dict[str, str]) -> dict:
    """The report: one entry per backend with its runtime, peaks, results, the
    skipped and failed measurements, and why a worker stopped early."""
    report = {"options": options, "backends": {}}
    for backend in backends:
        own = [line for line in lines if line["backend"] == backend]
        header = next((line for line in own if line["kind"] == "runtime"), {})
        done = {(line["model"], line["dtype_policy"]) for line in own
                if line["kind"] in ("result", "skipped", "failed")}
        missing = [{"model": m, "dtype_policy": p, "reason": stopped.get(backend, "not reached")}
                   for m in options["models"] for p in options["policies"]
                   if (m, p) not in done]
        report["backends"][backend] = {
            "runtime": header.get("runtime"),
            "matmul_peak_flops_per_second": header.get("matmul_peak_flops_per_second"),
            "results": [line for line in own if line["kind"] == "result"],
            "failed": [line for line in own if line["kind"] == "failed"],
            "skipped": [line for line in own if line["kind"] == "skipped"] + missing,
            "stopped": stopped.get(backend),
        }
    for entry in report["backends"].values():
        for result in entry["results"]:  # bf16 over float32, per model, where both ran
            base = next((r for r in entry["results"] if r["model"] == result["model"]
                         and r["dtype_policy"] == options["policies"][0]), None)
            if base is not None:
                result["speedup"] = result["images_per_second"] / base["images_per_second"]
    return report


def format_table(report: dict) -> str:
    """One line per backend, model and precision."""
    header = (f"{'backend':<10} {'model':<10} {'policy':<15} {'batch':>5} {'images/s':>9} "
              f"{'ms/step':>8} {'steps':>5} {'epoch s':>8} {'speedup':>7}")
    rows = [header, "-" * len(header)]
    for backend, entry in report["backends"].items():
        for r in entry["results"]:
            speedup = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
            rows.append(f"{backend:<10} {r['model']:<10} {r['dtype_policy']:<15} "
                        f"{r['batch_size']:>5} {r['images_per_second']:>9.1f} "
                        f"{r['step_milliseconds']:>8.1f} {r['epoch_steps']:>5} "
                        f"{r['epoch_seconds']:>8.1f} {speedup:>7}")
        for r in entry["skipped"] + entry["failed"]:
            why = r.get("reason") or r.get("error")
            rows.append(f"{backend:<10} {r['model']:<10} {r['dtype_policy']:<15} not timed: {why}")
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    from helpers.papers import MODELS

    parser = argparse.ArgumentParser(
        description="Time one epoch of every full recipe on each backend, float32 and bfloat16.")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS,
                        help="default: every backend installed here")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--profile", default="full",
                        help="full (the notebooks' recipes) or another profile of profiles.yml")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (the median counts)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds of wall time for everything (default 420: 7 minutes)")
    parser.add_argument("--output", type=Path, default=Path("_build/bench/epochs.json"))
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--lines", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return _worker(args)
    started = time.monotonic()
    backends = args.backends or available_backends()
    missing = [b for b in backends if importlib.util.find_spec(b) is None]
    if missing:
        print(f"error: backend(s) not installed here: {', '.join(missing)}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    lines_file = args.output.with_suffix(".lines")
    lines_file.unlink(missing_ok=True)
    stopped = {}
    for i, backend in enumerate(backends):
        share = (args.budget - (time.monotonic() - started)) / (len(backends) - i)
        command = [sys.executable, "-m", "helpers.book.epoch_bench", "--worker", backend,
                   "--seconds", str(max(share - 15, 1)), "--lines", str(lines_file),
                   "--profile", args.profile, "--steps", str(args.steps),
                   "--repeats", str(args.repeats), "--models", *args.models,
                   "--policies", *args.policies]
        print(f"== {backend}: {share:.0f} s", flush=True)
        try:
            code = subprocess.run(command, timeout=max(share, 1)).returncode
            if code:
                stopped[backend] = f"the worker exited with status {code}"
        except subprocess.TimeoutExpired:
            stopped[backend] = f"stopped at the end of its {share:.0f} s share"
    lines = ([json.loads(line) for line in lines_file.read_text().splitlines()]
             if lines_file.exists() else [])
    lines_file.unlink(missing_ok=True)
    options = {"profile": args.profile, "models": args.models, "policies": args.policies,
               "steps": args.steps, "repeats": args.repeats, "budget_seconds": args.budget,
               "wall_seconds": time.monotonic() - started}
    report = merge(lines, options=options, backends=backends, stopped=stopped)
    from helpers.book.bench import provenance  # no Keras import: the workers had the backends

    report.update(provenance())
    report["options"]["wall_seconds"] = time.monotonic() - started
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_table(report))
    print(f"\nwritten: {args.output} ({report['options']['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
