"""Where a training step's time goes: the compiled step profiled, by kind of operation.

    python -m helpers.book.breakdown                                # TensorFlow, full size
    python -m helpers.book.breakdown --backend jax --models vit cct
    python -m helpers.book.breakdown --profile cifar10-cpu --steps 10

Each model is built and compiled as the benchmark builds it
(``helpers.book.bench.compiled_model``), trained for ``--warmup`` steps on one
random batch (compilation), then for ``--steps`` steps under the backend's
profiler, each step timed on the wall clock:

* JAX runs the step as one XLA program (and TensorFlow too with
  ``--jit-compile true``). XLA is asked to write the optimized program out
  (``XLA_FLAGS=--xla_dump_to``, set before the backend loads) and the
  profiler times each operation it runs: a fusion of elementwise work, a
  matrix product, a copy. Each is looked up by name in the written program,
  which says what it computes.
* TensorFlow on a machine without a GPU runs the step as a TensorFlow graph:
  Keras's ``jit_compile="auto"`` turns XLA off there. The profiler times each
  graph kernel (oneDNN's, where TensorFlow has one), named by its type.
* PyTorch runs eagerly: ``torch.profiler`` times each ATen operator (its own
  time, without the operators it calls).

Operations are sorted into kinds (``KINDS``): ``matmul`` (a matrix product or
convolution, or a fusion around one), ``gather/scatter`` (indexed reads and
writes: the augmentation's resampling, their gradients), ``reduction`` (a fusion
ending in a sum or maximum: softmax, normalization statistics, gradient
sums), ``elementwise`` (any other fusion or arithmetic), ``random`` (random
bits: dropout, augmentation), ``cast`` (conversions between number types alone:
float32 to bfloat16 and back under a mixed dtype policy), ``data movement``
(copies, transposes, concatenations, pads, slices) and ``other``.

``--dtype-policy mixed_bfloat16`` builds the models under that Keras policy, and
the matmul rate is then judged against the bfloat16 peak.

The table gives, per model: the step's wall time; the operations' summed
time per step (more than the wall time where operations ran side by side on
the cores, less where the step waited on Python, dispatch or the other core);
each kind's share of the operations' time; and the rate of the matrix
products: the model's training FLOPs per step (3 x XLA's forward count, as in
the benchmark) over the time spent in matmul operations. That rate against
the machine's matmul peak says how well the products themselves run; the other
kinds' shares say how much of the step is not products at all. Everything goes
to a JSON file too (``--output``, default ``_build/bench/breakdown-<backend>.json``).
A measurement to read: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("matmul", "gather/scatter", "reduction", "elementwise", "random", "cast",
         "data movement", "other")
MATMUL_OPCODES = {"dot", "convolution"}
INDEXED_OPCODES = {"gather", "scatter", "dynamic-slice", "dynamic-update-slice", "select-and-scatter"}
REDUCE_OPCODES = {"reduce", "reduce-window", "all-reduce", "sort"}
RANDOM_OPCODES = {"rng", "rng-bit-generator", "rng-get-and-update-state"}
SHIFT_OPCODES = {"shift-left", "shift-right-logical"}
MOVEMENT_OPCODES = {"copy", "transpose", "concatenate", "pad", "slice", "reshape", "bitcast",
                    "broadcast", "reverse", "copy-start", "copy-done", "tuple",
                    "get-tuple-element", "bitcast-convert", "iota"}
# Operations that only run others (their time is their children's).
CONTAINER_OPCODES = {"while", "conditional", "call", "async-start", "async-done"}

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (.*)$")
_OPCODE = re.compile(r"(?:^|\s)([a-z][a-z0-9\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_TF_OPERATION = re.compile(r"[^\s:]+:[A-Za-z_]\w*")
_CALLED = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)|branch_computations=\{([^}]*)\}")


def parse_hlo(text: str) -> tuple[dict, dict]:
    """The instructions of an HLO module's text: ``{name: (opcode, [called
    computations], custom_call_target)}``, and ``{computation: [instruction names]}``."""
    instructions, computations = {}, {}
    current = None
    for line in text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            match = _COMPUTATION.match(line)
            current = match.group(1) if match else None
            if current:
                computations[current] = []
            continue
        match = _INSTRUCTION.match(line)
        if not match or current is None:
            continue
        name, rest = match.groups()
        opcode = _OPCODE.search(rest)
        if not opcode:
            continue
        called = []
        for one, several in _CALLED.findall(rest):
            called += [c.strip().lstrip("%") for c in (one or several).split(",") if c.strip()]
        target = re.search(r'custom_call_target="([^"]+)"', rest)
        instructions[name] = (opcode.group(1), called, target.group(1) if target else "")
        computations[current].append(name)
    return instructions, computations


def hlo_kind(name: str, instructions: dict, computations: dict) -> str | None:
    """The kind (``KINDS``) of HLO instruction ``name``; None for a container
    (a loop, a call) or a name the module does not have."""
    if name not in instructions:
        return None
    opcode, called, target = instructions[name]
    if opcode in CONTAINER_OPCODES:
        return None
    opcodes = {opcode}
    if opcode in ("fusion", "custom-call"):
        pending, seen = list(called), set()
        while pending:
            computation = pending.pop()
            if computation in seen or computation not in computations:
                continue
            seen.add(computation)
            for inner in computations[computation]:
                inner_opcode, inner_called, _ = instructions[inner]
                opcodes.add(inner_opcode)
                pending += inner_called
    target = target.lower()
    if opcodes & MATMUL_OPCODES or any(w in target for w in ("matmul", "gemm", "conv", "dot")):
        return "matmul"
    # Random bits: XLA's generator, or a counter-based one written out in integer
    # arithmetic (JAX's threefry: xors, shifts and adds of 32-bit words).
    if opcodes & RANDOM_OPCODES or ("xor" in opcodes and opcodes & SHIFT_OPCODES):
        return "random"
    if opcodes & INDEXED_OPCODES:
        return "gather/scatter"
    if opcodes & REDUCE_OPCODES:
        return "reduction"
    if opcode == "custom-call":
        return "other"
    computing = opcodes - MOVEMENT_OPCODES - {"fusion", "parameter", "constant"}
    if computing == {"convert"}:  # a change of number type, perhaps with a copy or transpose
        return "cast"
    if computing:
        return "elementwise"
    return "data movement"


# PyTorch's ATen operators, by kind (anything else is elementwise).
TORCH_KINDS = {
    "matmul": ("mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear", "conv",
               "convolution", "_convolution", "mkldnn_convolution", "convolution_backward",
               "_scaled_dot_product", "einsum", "dot", "addmv", "mv", "tensordot"),
    "gather/scatter": ("gather", "scatter", "scatter_add", "scatter_add_", "index",
                       "index_select", "index_put", "index_put_", "index_add", "index_add_",
                       "take_along_dim", "embedding", "grid_sampler", "_index_put_impl_",
                       "embedding_dense_backward"),
    "reduction": ("sum", "mean", "var", "std", "var_mean", "max", "min", "amax", "amin",
                  "softmax", "_softmax", "_softmax_backward_data", "log_softmax",
                  "_log_softmax", "_log_softmax_backward_data", "native_layer_norm",
                  "native_layer_norm_backward", "norm", "linalg_vector_norm", "argmax",
                  "topk", "nll_loss", "nll_loss_forward", "nll_loss_backward", "cumsum",
                  "logsumexp", "all", "any", "prod", "sort"),
    "random": ("uniform_", "normal_", "bernoulli_", "bernoulli", "random_", "rand",
               "randn", "randint", "randperm", "multinomial", "native_dropout"),
    "cast": ("_to_copy", "to", "type_as"),
    "data movement": ("copy_", "clone", "contiguous", "cat", "stack",
                      "pad", "constant_pad_nd", "reflection_pad2d", "slice", "narrow",
                      "flip", "roll", "repeat", "tile", "expand", "permute", "transpose",
                      "reshape", "view", "_unsafe_view", "flatten", "squeeze", "unsqueeze",
                      "t", "split", "chunk", "unbind", "select", "as_strided", "empty",
                      "empty_like", "empty_strided", "zeros", "zeros_like", "ones",
                      "ones_like", "fill_", "zero_", "full", "new_empty", "new_zeros",
                      "resize_", "detach", "alias", "lift_fresh", "set_"),
}


# TensorFlow's graph operators (run where Keras does not compile with XLA: by
# default on a machine without a GPU), by kind, with oneDNN's "_Mkl" variants
# under their plain names (anything else is elementwise).
TF_KINDS = {
    "matmul": ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "FusedMatMul",
               "Conv2D", "NativeConv2D", "FusedConv2D", "Conv2DBackpropInput",
               "Conv2DBackpropFilter", "NativeConv2DBackpropInput",
               "NativeConv2DBackpropFilter", "DepthwiseConv2dNative", "Einsum",
               "FusedBatchMatMulV2"),
    "gather/scatter": ("GatherV2", "GatherNd", "ResourceGather", "ScatterNd",
                       "TensorScatterUpdate", "TensorScatterAdd", "UnsortedSegmentSum",
                       "ImageProjectiveTransformV3", "ResizeBilinear", "ResizeBilinearGrad"),
    "reduction": ("Sum", "Mean", "Max", "Min", "Prod", "All", "Any", "ArgMax", "Softmax",
                  "LogSoftmax", "SparseSoftmaxCrossEntropyWithLogits", "TopKV2", "InTopKV2",
                  "MaxPool", "NativeMaxPool", "MaxPoolGrad", "NativeMaxPoolGrad", "BiasAddGrad",
                  "Cumsum"),
    "random": ("StatelessRandomUniformV2", "StatelessRandomNormalV2",
               "StatelessTruncatedNormalV2", "StatelessRandomUniformIntV2",
               "StatelessRandomGetKeyCounter", "RandomUniform", "RandomStandardNormal"),
    "cast": ("Cast",),
    "data movement": ("Transpose", "ConcatV2", "Pad", "PadV2", "MirrorPad", "Slice",
                      "StridedSlice", "StridedSliceGrad", "Reshape", "Tile", "Pack", "Unpack",
                      "Split", "SplitV", "ReverseV2", "Identity", "Squeeze", "ExpandDims",
                      "BroadcastTo", "Fill", "ZerosLike", "OnesLike", "Const",
                      "ExtractImagePatches", "Shape", "ShapeN", "DynamicStitch"),
}
# Operators that only run others (their time is their children's) or wait.
TF_CONTAINERS = {"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If",
                 "StatelessIf", "XlaLaunch", "_XlaRun", "_XlaCompile", "_Retval", "_Arg",
                 "NoOp", "ReadVariableOp", "AssignVariableOp", "VarHandleOp"}


def tf_kind(operator: str) -> str | None:
    """The kind of TensorFlow operator type ``operator`` (``_MklBatchMatMulV2`` ->
    matmul); None for one that only runs others."""
    if operator in TF_CONTAINERS or operator.startswith("__"):  # "__inference_...": a call
        return None
    plain = re.sub(r"^_(Mkl)?(Native)?", "", operator)
    for kind, names in TF_KINDS.items():
        if operator in names or plain in names:
            return kind
    return "elementwise"


def torch_kind(operator: str) -> str:
    """The kind of PyTorch operator ``operator`` (``aten::addmm`` -> matmul)."""
    short = operator.split("::")[-1]
    if short.startswith("_scaled_dot_product"):  # attention's fused kernels, forward and backward
        return "matmul"
    for kind, names in TORCH_KINDS.items():
        if short in names:
            return kind
    return "elementwise" if operator.startswith("aten::") else "other"


def _new_dumps(folder: Path, before: set) -> str:
    """The text of the largest optimized HLO module written to ``folder`` since ``before``."""
    files = [Path(f) for f in glob.glob(str(folder / "*after_optimizations.txt"))
             if f not in before]
    if not files:
        return ""
    return max(files, key=lambda f: f.stat().st_size).read_text()


def _xla_events_jax(trace_dir: Path) -> list[tuple[str, float]]:
    """(name, seconds) of every complete event of a JAX profile's Perfetto trace."""
    paths = sorted(glob.glob(str(trace_dir / "**" / "perfetto_trace.json.gz"), recursive=True))
    with gzip.open(paths[-1]) as handle:
        trace = json.load(handle)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [(e["name"], e.get("dur", 0) * 1e-6) for e in events if e.get("ph") == "X"]


def _xla_events_tensorflow(trace_dir: Path) -> list[tuple[str, float]]:
    """(name, seconds) of every event of a TensorFlow profile (its XSpace protobuf)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(str(trace_dir / "**" / "*.xplane.pb"), recursive=True))
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(paths[-1]).read_bytes())
    events = []
    for plane in space.planes:
        names = {i: m.name for i, m in plane.event_metadata.items()}
        for line in plane.lines:
            events += [(names.get(e.metadata_id, ""), e.duration_ps * 1e-12) for e in line.events]
    return events


def profile_traced(model, x, y, *, steps: int, dump_dir: Path, before: set) -> dict:
    """Profile ``steps`` training steps on TensorFlow or JAX: seconds per step by
    kind, and the wall time of each step. The operations are XLA's where the step
    was compiled with XLA, TensorFlow's graph kernels where it was not."""
    import keras

    backend = keras.backend.backend()
    instructions, computations = parse_hlo(_new_dumps(dump_dir, before))
    trace_dir = Path(tempfile.mkdtemp(prefix="breakdown-"))
    walls = []
    if backend == "jax":
        import jax

        with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                walls.append(time.perf_counter() - start)
        events = _xla_events_jax(trace_dir)
    else:
        import tensorflow as tf

        tf.profiler.experimental.start(str(trace_dir))
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            walls.append(time.perf_counter() - start)
        tf.profiler.experimental.stop()
        events = _xla_events_tensorflow(trace_dir)
    shutil.rmtree(trace_dir, ignore_errors=True)
    seconds = collections.Counter()
    operations = collections.Counter()
    unmatched = 0.0
    for name, duration in events:
        if name in instructions:  # an operation of the compiled program
            kind, label = hlo_kind(name, instructions, computations), name
        elif backend == "tensorflow" and _TF_OPERATION.fullmatch(name):
            label = name.rsplit(":", 1)[1]  # "scope/op_name:OpType", TF's own kernels
            kind = tf_kind(label)
        else:
            if re.fullmatch(r"[a-z][\w\-]*\.\d+", name):  # like an HLO name, not found
                unmatched += duration / steps
            continue
        if kind is not None:
            seconds[kind] += duration / steps
            operations[(label, kind)] += duration / steps
    return {"seconds_by_kind": dict(seconds), "step_seconds": walls,
            "top_operations": _top(operations),
            "xla": bool(instructions), "hlo_instructions": len(instructions),
            "unmatched_seconds": unmatched}


def profile_torch(model, x, y, *, steps: int) -> dict:
    """Profile ``steps`` eager PyTorch training steps: each operator's own CPU time by kind."""
    import torch

    walls = []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            walls.append(time.perf_counter() - start)
    seconds = collections.Counter()
    operations = collections.Counter()
    for average in profiler.key_averages():
        if average.key.startswith("aten::"):
            kind = torch_kind(average.key)
            seconds[kind] += average.self_cpu_time_total * 1e-6 / steps
            operations[(average.key, kind)] += average.self_cpu_time_total * 1e-6 / steps
    return {"seconds_by_kind": dict(seconds), "step_seconds": walls,
            "top_operations": _top(operations)}


def _top(operations: collections.Counter, count: int = 15) -> list[dict]:
    """The ``count`` operations (or operator types) that took longest, per step."""
    return [{"operation": label, "kind": kind, "seconds_per_step": seconds}
            for (label, kind), seconds in operations.most_common(count)]


def breakdown_model(name: str, parameters: dict, *, batch_size: int, steps: int, warmup: int,
                    dump_dir: Path | None, jit_compile="auto") -> dict:
    """One model's profile: wall time per step, operations' time by kind."""
    import statistics

    import keras

    from helpers.book.bench import compiled_model

    before = set(glob.glob(str(dump_dir / "*"))) if dump_dir else set()
    model, images, labels = compiled_model(name, parameters, images=batch_size,
                                           jit_compile=jit_compile)
    x = keras.ops.convert_to_tensor(images)
    y = keras.ops.convert_to_tensor(labels)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    if keras.backend.backend() == "torch":
        result = profile_torch(model, x, y, steps=steps)
    else:
        result = profile_traced(model, x, y, steps=steps, dump_dir=dump_dir, before=before)
    wall = statistics.median(result["step_seconds"])
    operations = sum(result["seconds_by_kind"].values())
    result.update({
        "model": name, "batch_size": batch_size, "steps": steps,
        "parameter_count": int(model.count_params()),
        "wall_seconds_per_step": wall, "operation_seconds_per_step": operations,
        "shares": {kind: result["seconds_by_kind"].get(kind, 0.0) / operations
                   for kind in KINDS} if operations else {},
    })
    keras.backend.clear_session()
    return result


def add_matmul_rate(result: dict, flops_per_image: float) -> None:
    """The matrix products' achieved rate: training FLOPs per step over matmul time."""
    from helpers.book.bench import TRAINING_FLOPS_PER_FORWARD

    matmul = result["seconds_by_kind"].get("matmul", 0.0)
    result["flops_per_image"] = flops_per_image
    if matmul:
        work = TRAINING_FLOPS_PER_FORWARD * flops_per_image * result["batch_size"]
        result["matmul_flops_per_second"] = work / matmul


def format_table(results: list[dict], peak: float | None = None) -> str:
    """One line per model: wall and operation time per step, shares by kind, matmul rate."""
    short = {"gather/scatter": "gather", "data movement": "movement", "elementwise": "elemwise"}
    kinds = [short.get(k, k) for k in KINDS]
    header = (f"{'model':<10} {'batch':>5} {'wall ms':>8} {'ops ms':>8} "
              + " ".join(f"{k:>9}" for k in kinds) + f" {'mm GFLOP/s':>10} {'of peak':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        shares = " ".join(f"{100 * r['shares'].get(k, 0):>8.1f}%" for k in KINDS)
        rate = r.get("matmul_flops_per_second")
        rate_text = "-" if rate is None else f"{rate / 1e9:.0f}"
        of_peak = "-" if rate is None or not peak else f"{100 * rate / peak:.0f}%"
        lines.append(f"{r['model']:<10} {r['batch_size']:>5} "
                     f"{1000 * r['wall_seconds_per_step']:>8.1f} "
                     f"{1000 * r['operation_seconds_per_step']:>8.1f} {shares} "
                     f"{rate_text:>10} {of_peak:>7}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    from helpers.book.bench import DTYPE_POLICIES, _positive, add_model_options

    parser = argparse.ArgumentParser(
        description="Where each model's training step spends its time, by kind of operation."
    )
    add_model_options(parser)
    parser.add_argument("--dtype-policy", choices=DTYPE_POLICIES, default="float32",
                        help="Keras dtype policy the models are built under")
    parser.add_argument("--steps", type=_positive, default=5, help="profiled steps")
    parser.add_argument("--warmup", type=_positive, default=2, help="steps before profiling")
    parser.add_argument("--top", type=int, default=0,
                        help="also print each model's N longest operations")
    parser.add_argument("--no-flops", action="store_true", help="skip the matmul rate")
    parser.add_argument("--output", type=Path,
                        help="JSON file (default _build/bench/breakdown-<backend>.json)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "keras" in sys.modules:
        print("error: run as a program: XLA's flags are set before Keras loads its backend",
              file=sys.stderr)
        return 2
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    dump_dir = None
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "torch":
        dump_dir = Path(tempfile.mkdtemp(prefix="xla-dump-"))
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump_dir}"
                                   " --xla_dump_hlo_as_text").strip()
    import keras

    from helpers.book.bench import JIT_COMPILE, matmul_peak, model_configs, provenance
    from helpers.book.flops import models_flops
    from helpers.harness.records import describe_runtime, runtime
    from helpers.harness.run import dtype_policy

    configs = model_configs(args)
    if configs is None:
        return 2
    backend = keras.backend.backend()
    print(describe_runtime(), flush=True)
    compute_dtype = keras.DTypePolicy(args.dtype_policy).compute_dtype
    peak = matmul_peak(compute_dtype)
    print(f"dtype policy {args.dtype_policy}; matmul peak: {compute_dtype} {peak / 1e9:.0f} "
          "GFLOP/s", flush=True)
    results = []
    for name, parameters in configs.items():
        batch_size = args.batch_size or parameters["batch_size"]
        print(f"== {name}: batch {batch_size}, {args.warmup} + {args.steps} steps ...", flush=True)
        with dtype_policy(args.dtype_policy):
            results.append(breakdown_model(name, parameters, batch_size=batch_size,
                                           steps=args.steps, warmup=args.warmup,
                                           dump_dir=dump_dir,
                                           jit_compile=JIT_COMPILE[args.jit_compile]))
    if not args.no_flops:
        print("== counting FLOPs (XLA, on the JAX backend)", flush=True)
        specs = [{"name": name, "parameters": p} for name, p in configs.items()]
        for result, flops in zip(results, models_flops(specs)):
            add_matmul_rate(result, flops)
    print()
    print(format_table(results, peak))
    if args.top:
        for result in results:
            print(f"\n{result['model']}: the {args.top} longest operations, ms per step")
            for entry in result["top_operations"][:args.top]:
                print(f"  {1000 * entry['seconds_per_step']:8.2f}  {entry['kind']:<14} "
                      f"{entry['operation']}")
    output = args.output or Path("_build") / "bench" / f"breakdown-{backend}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {"runtime": runtime(), **provenance(), "profile": args.profile, "kinds": KINDS,
              "jit_compile": args.jit_compile, "dtype_policy": args.dtype_policy,
              "peak_dtype": compute_dtype, "matmul_peak_flops_per_second": peak, "parameters": configs, "results": results}
    output.write_text(json.dumps(report, indent=2) + "\n")
    if dump_dir:
        shutil.rmtree(dump_dir, ignore_errors=True)
    print(f"\nwritten: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
