"""Where a training step's time goes (helpers.book.breakdown): the HLO reader, the
kinds of operations, the table, and the command on the session's backend."""

import json
import os
import subprocess
import sys

import pytest

from helpers.book import breakdown

# A small optimized module in XLA's text format, written for these tests: a product
# in a library fusion, elementwise and reducing fusions, a gather, a copy, random
# bits two ways, a loop, a matmul custom call, and a fusion whose product sits one
# call deeper.
MODULE = """\
HloModule jit_train_step, entry_computation_layout={(f32[8,4]{1,0}, f32[4,3]{1,0})->f32[]}

%fused_dot (param_0: f32[8,4], param_1: f32[4,3]) -> f32[8,3] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %param_1 = f32[4,3]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,3]{1,0} dot(f32[8,4]{1,0} %param_0, f32[4,3]{1,0} %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%outer_product_computation (param_0.5: f32[8,4], param_1.5: f32[4,3]) -> f32[8,3] {
  %param_0.5 = f32[8,4]{1,0} parameter(0)
  %param_1.5 = f32[4,3]{1,0} parameter(1)
  %inner_fusion.2 = f32[8,3]{1,0} fusion(f32[8,4]{1,0} %param_0.5, f32[4,3]{1,0} %param_1.5), kind=kOutput, calls=%fused_dot
  ROOT %tanh.2 = f32[8,3]{1,0} tanh(f32[8,3]{1,0} %inner_fusion.2)
}

%add_computation (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add.3 = f32[] add(f32[] %x, f32[] %y)
}

%fused_gelu (param_0.1: f32[8,3]) -> f32[8,3] {
  %param_0.1 = f32[8,3]{1,0} parameter(0)
  %constant.4 = f32[] constant(0.5)
  %broadcast.4 = f32[8,3]{1,0} broadcast(f32[] %constant.4), dimensions={}
  %erf.4 = f32[8,3]{1,0} erf(f32[8,3]{1,0} %param_0.1)
  ROOT %multiply.4 = f32[8,3]{1,0} multiply(f32[8,3]{1,0} %broadcast.4, f32[8,3]{1,0} %erf.4)
}

%fused_reduce (param_0.2: f32[8,3]) -> f32[] {
  %param_0.2 = f32[8,3]{1,0} parameter(0)
  %exponential.5 = f32[8,3]{1,0} exponential(f32[8,3]{1,0} %param_0.2)
  %constant.5 = f32[] constant(0)
  ROOT %reduce.5 = f32[] reduce(f32[8,3]{1,0} %exponential.5, f32[] %constant.5), dimensions={0,1}, to_apply=%add_computation
}

%fused_gather (param_0.3: f32[8,3], param_1.3: s32[8,1]) -> f32[8,3] {
  %param_0.3 = f32[8,3]{1,0} parameter(0)
  %param_1.3 = s32[8,1]{1,0} parameter(1)
  ROOT %gather.6 = f32[8,3]{1,0} gather(f32[8,3]{1,0} %param_0.3, s32[8,1]{1,0} %param_1.3), offset_dims={1}, collapsed_slice_dims={0}, start_index_map={0}, index_vector_dim=1, slice_sizes={1,3}
}

%fused_threefry (param_0.4: u32[8,3]) -> u32[8,3] {
  %param_0.4 = u32[8,3]{1,0} parameter(0)
  %constant.7 = u32[] constant(13)
  %broadcast.7 = u32[8,3]{1,0} broadcast(u32[] %constant.7), dimensions={}
  %shift-left.7 = u32[8,3]{1,0} shift-left(u32[8,3]{1,0} %param_0.4, u32[8,3]{1,0} %broadcast.7)
  ROOT %xor.7 = u32[8,3]{1,0} xor(u32[8,3]{1,0} %shift-left.7, u32[8,3]{1,0} %param_0.4)
}

%fused_transpose (param_0.6: f32[8,3]) -> f32[3,8] {
  %param_0.6 = f32[8,3]{1,0} parameter(0)
  ROOT %transpose.8 = f32[3,8]{1,0} transpose(f32[8,3]{1,0} %param_0.6), dimensions={1,0}
}

%fused_convert (param_0.7: f32[8,3]) -> bf16[3,8] {
  %param_0.7 = f32[8,3]{1,0} parameter(0)
  %convert.8 = bf16[8,3]{1,0} convert(f32[8,3]{1,0} %param_0.7)
  ROOT %transpose.9 = bf16[3,8]{1,0} transpose(bf16[8,3]{1,0} %convert.8), dimensions={1,0}
}

%body (state: (s32[], f32[8,3])) -> (s32[], f32[8,3]) {
  %state = (s32[], f32[8,3]{1,0}) parameter(0)
  %counter = s32[] get-tuple-element((s32[], f32[8,3]{1,0}) %state), index=0
  %values = f32[8,3]{1,0} get-tuple-element((s32[], f32[8,3]{1,0}) %state), index=1
  %negate.9 = f32[8,3]{1,0} negate(f32[8,3]{1,0} %values)
  ROOT %tuple.9 = (s32[], f32[8,3]{1,0}) tuple(s32[] %counter, f32[8,3]{1,0} %negate.9)
}

%cond (state.1: (s32[], f32[8,3])) -> pred[] {
  %state.1 = (s32[], f32[8,3]{1,0}) parameter(0)
  ROOT %constant.10 = pred[] constant(false)
}

ENTRY %main.20 (Arg_0.1: f32[8,4], Arg_1.2: f32[4,3], Arg_2.3: s32[8,1], Arg_3.4: u32[2], Arg_4.5: u32[8,3]) -> f32[] {
  %Arg_0.1 = f32[8,4]{1,0} parameter(0)
  %Arg_1.2 = f32[4,3]{1,0} parameter(1)
  %Arg_2.3 = s32[8,1]{1,0} parameter(2)
  %Arg_3.4 = u32[2]{0} parameter(3)
  %Arg_4.5 = u32[8,3]{1,0} parameter(4)
  %ynn_fusion.11 = f32[8,3]{1,0} fusion(f32[8,4]{1,0} %Arg_0.1, f32[4,3]{1,0} %Arg_1.2), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(train_step)/dot_general"}
  %tanh_fusion.12 = f32[8,3]{1,0} fusion(f32[8,4]{1,0} %Arg_0.1, f32[4,3]{1,0} %Arg_1.2), kind=kLoop, calls=%outer_product_computation
  %multiply_fusion.13 = f32[8,3]{1,0} fusion(f32[8,3]{1,0} %ynn_fusion.11), kind=kLoop, calls=%fused_gelu
  %gather_fusion.14 = f32[8,3]{1,0} fusion(f32[8,3]{1,0} %multiply_fusion.13, s32[8,1]{1,0} %Arg_2.3), kind=kLoop, calls=%fused_gather
  %copy.15 = f32[8,3]{0,1} copy(f32[8,3]{1,0} %gather_fusion.14)
  %transpose_fusion.16 = f32[3,8]{1,0} fusion(f32[8,3]{0,1} %copy.15), kind=kLoop, calls=%fused_transpose
  %rng-bit-generator.17 = (u32[2]{0}, u32[8,3]{1,0}) rng-bit-generator(u32[2]{0} %Arg_3.4), algorithm=rng_default
  %xor_fusion.18 = u32[8,3]{1,0} fusion(u32[8,3]{1,0} %Arg_4.5), kind=kLoop, calls=%fused_threefry
  %convert_fusion.23 = bf16[3,8]{1,0} fusion(f32[8,3]{1,0} %copy.15), kind=kLoop, calls=%fused_convert
  %constant.19 = s32[] constant(0)
  %tuple.19 = (s32[], f32[8,3]{1,0}) tuple(s32[] %constant.19, f32[8,3]{1,0} %copy.15)
  %while.19 = (s32[], f32[8,3]{1,0}) while((s32[], f32[8,3]{1,0}) %tuple.19), condition=%cond, body=%body
  %custom-call.20 = f32[8,3]{1,0} custom-call(f32[8,4]{1,0} %Arg_0.1, f32[4,3]{1,0} %Arg_1.2), custom_call_target="__onednn$matmul"
  %custom-call.21 = f32[8,3]{1,0} custom-call(f32[8,3]{1,0} %copy.15), custom_call_target="SomethingElse"
  ROOT %reduce_fusion.22 = f32[] fusion(f32[8,3]{1,0} %multiply_fusion.13), kind=kInput, calls=%fused_reduce
}
"""


@pytest.mark.keras_free
def test_the_hlo_reader_finds_each_instruction_its_opcode_and_what_it_calls():
    instructions, computations = breakdown.parse_hlo(MODULE)
    assert instructions["ynn_fusion.11"] == ("fusion", ["fused_dot"], "")
    assert instructions["rng-bit-generator.17"][0] == "rng-bit-generator"
    assert instructions["while.19"] == ("while", ["cond", "body"], "")
    assert instructions["custom-call.20"] == ("custom-call", [], "__onednn$matmul")
    assert instructions["reduce.5"] == ("reduce", ["add_computation"], "")
    assert instructions["tuple.19"][0] == "tuple"  # a tuple shape before the opcode
    assert computations["fused_dot"] == ["param_0", "param_1", "dot.1"]
    assert computations["main.20"][-1] == "reduce_fusion.22"
    assert len(computations) == 12


@pytest.mark.keras_free
@pytest.mark.parametrize("name,kind", [
    ("ynn_fusion.11", "matmul"),
    ("tanh_fusion.12", "matmul"),          # the product is one call deeper
    ("custom-call.20", "matmul"),          # a library matmul called by name
    ("multiply_fusion.13", "elementwise"),
    ("negate.9", "elementwise"),           # an unfused operation inside the loop
    ("reduce_fusion.22", "reduction"),
    ("gather_fusion.14", "gather/scatter"),
    ("rng-bit-generator.17", "random"),
    ("xor_fusion.18", "random"),           # threefry written out in integer arithmetic
    ("copy.15", "data movement"),
    ("transpose_fusion.16", "data movement"),
    ("convert_fusion.23", "cast"),          # float32 to bfloat16, transposed on the way
    ("custom-call.21", "other"),
    ("while.19", None),                    # a container: its body's operations count
    ("no_such_fusion.99", None),
])
def test_each_operation_gets_the_kind_of_what_it_computes(name, kind):
    instructions, computations = breakdown.parse_hlo(MODULE)
    assert breakdown.hlo_kind(name, instructions, computations) == kind


@pytest.mark.keras_free
@pytest.mark.parametrize("operator,kind", [
    ("aten::addmm", "matmul"), ("aten::bmm", "matmul"), ("aten::convolution_backward", "matmul"),
    ("aten::gather", "gather/scatter"), ("aten::index_put_", "gather/scatter"),
    ("aten::_softmax", "reduction"), ("aten::native_layer_norm_backward", "reduction"),
    ("aten::bernoulli_", "random"), ("aten::uniform_", "random"),
    ("aten::copy_", "data movement"), ("aten::cat", "data movement"),
    ("aten::_to_copy", "cast"), ("aten::to", "cast"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "matmul"),
    ("aten::gelu", "elementwise"), ("aten::mul", "elementwise"),
    ("autograd::engine::evaluate_function: AddBackward0", "other"),
])
def test_pytorch_operators_get_their_kinds(operator, kind):
    assert breakdown.torch_kind(operator) == kind


@pytest.mark.keras_free
@pytest.mark.parametrize("operator,kind", [
    ("_MklBatchMatMulV2", "matmul"), ("Cast", "cast"), ("Transpose", "data movement"),
    ("_MklFusedMatMul", "matmul"), ("Softmax", "reduction"), ("Gelu", "elementwise"),
    ("StatefulPartitionedCall", None),
])
def test_tensorflow_operators_get_their_kinds(operator, kind):
    assert breakdown.tf_kind(operator) == kind


@pytest.mark.keras_free
def test_the_matmul_rate_is_the_training_flops_over_the_time_in_products():
    result = {"batch_size": 64, "seconds_by_kind": {"matmul": 0.02, "elementwise": 0.01}}
    breakdown.add_matmul_rate(result, 1e8)
    assert result["matmul_flops_per_second"] == pytest.approx(3 * 1e8 * 64 / 0.02)
    no_products = {"batch_size": 64, "seconds_by_kind": {"elementwise": 0.01}}
    breakdown.add_matmul_rate(no_products, 1e8)
    assert "matmul_flops_per_second" not in no_products


@pytest.mark.keras_free
def test_the_table_gives_each_kinds_share_and_the_matmul_rate():
    row = {"model": "cct", "batch_size": 128, "wall_seconds_per_step": 0.25,
           "operation_seconds_per_step": 0.4,
           "shares": {"matmul": 0.5, "elementwise": 0.25, "reduction": 0.25},
           "matmul_flops_per_second": 2e11}
    header, rule, line = breakdown.format_table([row], peak=4e11).splitlines()
    assert header.split() == ["model", "batch", "wall", "ms", "ops", "ms", "matmul", "gather",
                              "reduction", "elemwise", "random", "cast", "movement", "other",
                              "mm",
                              "GFLOP/s", "of", "peak"]
    assert line.split() == ["cct", "128", "250.0", "400.0", "50.0%", "0.0%", "25.0%", "25.0%",
                            "0.0%", "0.0%", "0.0%", "0.0%", "200", "50%"]
    assert len(rule) == len(header)


def test_the_command_must_set_xlas_flags_before_keras_loads(capsys):
    import keras  # noqa: F401  (loaded, as in any process that has built a model)

    assert breakdown.main(["--models", "cct", "--no-flops"]) == 2
    assert "XLA's flags are set before Keras loads" in capsys.readouterr().err


def test_the_command_profiles_a_step_on_this_backend(tmp_path):
    """The smoke CCT on the session's backend: the profiler's operations are found
    (in the dumped program on TensorFlow and JAX) and sorted, products among them."""
    output = tmp_path / "breakdown.json"
    done = subprocess.run(
        [sys.executable, "-m", "helpers.book.breakdown", "--profile", "smoke", "--models",
         "cct", "--batch-size", "16", "--warmup", "1", "--steps", "2", "--output", str(output)],
        cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["runtime"]["backend"] == os.environ["KERAS_BACKEND"]
    (result,) = report["results"]
    assert result["model"] == "cct" and result["batch_size"] == 16
    assert len(result["step_seconds"]) == 2
    # The operations found account for a real part of the step, and products are among them.
    # (A share of time, so a loose floor: the smoke CCT's products measured 4.6 to over 5% of
    # its operations' time on JAX on a busy 2-core machine.)
    assert result["operation_seconds_per_step"] > 0.2 * result["wall_seconds_per_step"]
    assert result["shares"]["matmul"] > 0.01
    assert sum(result["shares"].values()) == pytest.approx(1.0)
    assert result["matmul_flops_per_second"] > 1e8
    # JAX compiles the step with XLA: its operations are found in the written program.
    # TensorFlow, without a GPU, runs its graph kernels; PyTorch its ATen operators.
    backend = report["runtime"]["backend"]
    assert result.get("xla", False) == (backend == "jax")
    if backend == "jax":
        assert result["hlo_instructions"] > 100
        assert result["unmatched_seconds"] < 0.2 * result["operation_seconds_per_step"]
    # The longest operations, longest first, each of a known kind (at batch 16 the
    # smoke CCT's products are small: they need not be among them).
    top = [entry["seconds_per_step"] for entry in result["top_operations"]]
    assert top and top == sorted(top, reverse=True)
    assert sum(top) <= result["operation_seconds_per_step"] * (1 + 1e-9)
    assert {entry["kind"] for entry in result["top_operations"]} <= set(breakdown.KINDS)
    assert "mm GFLOP/s" in done.stdout and "cct" in done.stdout
