"""benchmarks/bench_training.py runs end to end at its --tiny sizes, and its PyTorch twins
compute what the needle models compute. Nothing here asserts a time: the numbers only
have to exist, be finite and be positive."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH = REPO_ROOT / "benchmarks" / "bench_training.py"
WORKLOADS = ["mlp", "makemore", "resnet9", "lstm_lm", "gpt"]
VARIANTS = ["needle_eager", "needle_compiled", "torch"]


def _run(args, tmp_path, hide_torch=False):
    """The benchmark in a child, on this checkout's needle (with a fake `torch` that fails to import
    first on the path when hide_torch), one round: the smallest run there is. One thread: on a
    busy machine, OpenMP threads waiting at a barrier for a descheduled sibling can make a
    tiny torch step take seconds, and nothing here is about speed."""
    path = [str(REPO_ROOT / "python")]
    if hide_torch:
        (tmp_path / "torch.py").write_text("raise ImportError('No module named torch (hidden by the test)')\n")
        path.insert(0, str(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NEEDLE_BACKEND"))}
    env["PYTHONPATH"] = os.pathsep.join(path + [env.get("PYTHONPATH", "")])
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(BENCH), *args, "--tiny", "--rounds", "1", "--threads", "1",
                           "--json", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def _positive(value, what):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{what}: {value!r}"


def test_tiny_run_times_every_workload_in_every_variant(tmp_path):
    pytest.importorskip("torch")
    proc, result = _run([], tmp_path)
    assert result["config"]["tiny"] and result["config"]["rounds"] == 1
    assert [row["workload"] for row in result["workloads"]] == WORKLOADS
    for row in result["workloads"]:
        name = row["workload"]
        assert row["workload"] in proc.stdout and row["description"] in proc.stdout
        # the full-size description says which sizes --tiny replaced (they are what ran)
        tiny = _load_benchmark().WORKLOADS[name].tiny
        assert row["description"].endswith(
            "(--tiny sizes: " + ", ".join(f"{k} {v}" for k, v in tiny.items()) + ")"), row["description"]
        assert sorted(row["ms"]) == sorted(VARIANTS), name
        for variant in VARIANTS:
            _positive(row["ms"][variant], f"{name} {variant} ms")
            assert len(row["rounds_ms"][variant]) == 1
            memory = row["memory_mb"][variant]
            _positive(memory["peak"], f"{name} {variant} peak MB")
            # growth over the RSS after building the model: finite, at most the peak (it may be 0)
            assert math.isfinite(memory["growth"]) and memory["growth"] <= memory["peak"], (name, variant, memory)
        _positive(row["ratio"]["eager"], f"{name} eager ratio")
        _positive(row["ratio"]["compiled"], f"{name} compiled ratio")
        assert set(row["params"]) == {"needle", "torch"}
        _positive(row["params"]["needle"], f"{name} parameters")
        assert row["params"]["needle"] == row["params"]["torch"], name


def test_without_pytorch_only_needle_is_timed(tmp_path):
    proc, result = _run(["mlp"], tmp_path, hide_torch=True)
    assert "PyTorch is not installed" in proc.stderr
    (row,) = result["workloads"]
    assert sorted(row["ms"]) == ["needle_compiled", "needle_eager"]
    assert row["ratio"] == {"eager": None, "compiled": None}
    assert list(row["params"]) == ["needle"]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_training", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_description_lists_the_tiny_sizes():
    """--tiny runs other sizes than the description's: the line says which (no torch needed)."""
    bench = _load_benchmark()
    mlp = bench.WORKLOADS["mlp"]
    assert bench.describe(mlp, tiny=False) == mlp.description
    assert bench.describe(mlp, tiny=True) == mlp.description + " (--tiny sizes: features 32, hidden 16, batch 8)"
    runs = {"mlp": {"needle_eager": [dict(ms=1.0, peak_mb=1.0, growth_mb=0.0, peak_includes_warmup=False,
                                          params=10)]}}
    assert bench.workload_rows(runs, tiny=True)[0]["description"].endswith("batch 8)")
    assert bench.workload_rows(runs)[0]["description"] == mlp.description


@pytest.mark.parametrize("name", WORKLOADS)
def test_torch_twin_computes_the_needle_model(name):
    """With needle's weights copied in, the PyTorch twin gives the same logits: the two sides
    time the same architecture, not just models of the same size."""
    torch = pytest.importorskip("torch")
    import needle as ndl

    bench = _load_benchmark()
    workload = bench.WORKLOADS[name]
    sizes = bench.sizes_of(workload, tiny=True)
    np.random.seed(0)
    model, twin = workload.needle(sizes), workload.torch(sizes)
    linear_weights = {id(m.weight) for m in twin.modules() if isinstance(m, torch.nn.Linear)}
    pairs = list(zip(model.parameters(), twin.named_parameters()))
    assert len(pairs) == len(model.parameters()) == len(list(twin.parameters()))
    with torch.no_grad():
        for p, (twin_name, q) in pairs:  # both list their parameters in forward order
            a = p.numpy()
            if q.ndim == 4:  # needle's conv weight is (k, k, in, out)
                a = a.transpose(3, 2, 0, 1)
            elif id(q) in linear_weights or twin_name.split(".")[-1].startswith("weight_"):  # (in, out) in needle
                a = a.T
            q.copy_(torch.from_numpy(np.ascontiguousarray(a)).reshape(q.shape))
    x, _ = workload.batch(sizes, np.random.RandomState(1))
    logits = model(ndl.Tensor(x, dtype=str(x.dtype), requires_grad=False))
    logits = logits[0] if isinstance(logits, tuple) else logits  # LanguageModel returns (logits, state)
    expected = twin(torch.from_numpy(x)).detach().numpy()
    # float32 rounding, amplified by BatchNorm over a batch of 2 in the tiny ResNet9 (up to 1e-4 on
    # logits of size 3); another architecture would be off by the size of the logits
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-3, atol=1e-3)


def _refused(args, tmp_path, **env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NEEDLE_BACKEND"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "python"), env.get("PYTHONPATH", "")])
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, str(BENCH), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""  # refused before any child ran
    return proc.stderr.strip().splitlines()[-1]


def test_cuda_without_a_gpu_is_refused_with_the_reason(tmp_path):
    line = _refused(["mlp", "--device", "cuda"], tmp_path, NUMBA_ENABLE_CUDASIM="0")
    assert "--device cuda" in line and "unavailable" in line, line


def test_bad_flags_are_refused_before_timing(tmp_path):
    assert "--micro" in _refused(["--micro", "--device", "cuda"], tmp_path)
    missing = tmp_path / "no" / "such" / "out.json"
    assert str(missing.parent) in _refused(["mlp", "--json", str(missing)], tmp_path)


def test_nanogpt_benchmark_runs_both_frameworks_on_a_few_iterations(tmp_path):
    """A smoke test of benchmarks/bench_nanogpt.py (speed itself is never asserted)."""
    text = tmp_path / "t.txt"
    text.write_text(open(REPO_ROOT / "python" / "needle" / "data" / "text" / "tinyshakespeare.txt").read()[:20000])
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_nanogpt.py"), "--text", str(text),
                           "--iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--block-size", "16",
                           "--batch-size", "2", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"needle", "torch"}
    assert rows["needle"]["parameters"] == rows["torch"]["parameters"]
    for r in rows.values():
        assert sum(steps for _, steps in r["times"]) == 4 and math.isfinite(r["val"])


# --- the machine line and the per-op overhead row (--micro) ------------------------------------

INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2
"""
AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx avx2 fma
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32
CPU implementer\t: 0x41
"""


def test_cpuinfo_gives_the_model_and_the_widest_simd_extension():
    bench = _load_benchmark()
    assert bench.parse_cpuinfo(INTEL_CPUINFO) == dict(cpu="Intel(R) Xeon(R) Platinum 8480+", simd="AVX-512")
    assert bench.parse_cpuinfo(AMD_CPUINFO) == dict(cpu="AMD EPYC 7B13 64-Core Processor", simd="AVX2")
    assert bench.parse_cpuinfo(ARM_CPUINFO) == dict(cpu=None, simd="NEON")
    assert bench.simd_level(["fpu", "sse2"]) == "unknown"


def test_machine_info_names_the_cpu_the_blas_and_the_threads(capsys):
    bench = _load_benchmark()
    info = bench.machine_info(3)
    assert info["cpu"] and info["simd"] and info["blas"] and info["cores"] == os.cpu_count()
    assert info["thread_env"] == {key: "3" for key in
                                  ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    bench.print_machine(info)
    out = capsys.readouterr().out
    assert info["simd"] in out and info["blas"] in out and "OMP_NUM_THREADS=3" in out


def test_blas_line_names_the_kernels_openblas_runs_here_not_the_build_machines():
    """numpy.show_config() names the core numpy's OpenBLAS was built on (a DYNAMIC_ARCH build
    running SkylakeX kernels reported "Haswell"); the benchmark's line reports the core that
    OpenBLAS itself says it runs, read through its get_corename entry point."""
    import ctypes

    from needle._openblas import numpy_openblas, openblas_symbol, runtime_info

    corenames = [openblas_symbol(lib, "openblas_get_corename") for _, lib in numpy_openblas()]
    running = runtime_info()
    bench = _load_benchmark()
    with mock.patch.dict(sys.modules, {"threadpoolctl": None}):  # the fallbacks this line comes from
        line = bench.blas_info()
    if not any(corenames):  # numpy built on another BLAS (MKL, Accelerate): its build configuration
        assert running == [] and line and "threads)" not in line
        return
    corename = next(fn for fn in corenames if fn is not None)
    corename.restype, corename.argtypes = ctypes.c_char_p, []
    assert running and corename().decode() in running[0] and "threads)" in running[0]
    assert line == "; ".join(running)


@pytest.mark.parametrize("variant", ["needle_eager", "torch"])
def test_overhead_expression_computes_its_value_and_gradients(variant):
    """The overhead row times ((a + b) * a).sum() with a = 0..3, b = 1: the value 20 and the
    gradients 2a + b and a on both sides, so both frameworks time the same work."""
    if variant == "torch":
        pytest.importorskip("torch")
    bench = _load_benchmark()
    forward, forward_backward, (a, b) = bench.overhead_steps(variant)
    assert float(forward().detach().numpy()) == 20.0  # 1*0 + 2*1 + 3*2 + 4*3
    forward_backward()
    np.testing.assert_array_equal(a.grad.detach().numpy(), [1, 3, 5, 7])
    np.testing.assert_array_equal(b.grad.detach().numpy(), [0, 1, 2, 3])
    _positive(bench.per_op_us(forward, calls=3, repeats=2), "per-op us")


def test_overhead_rows_take_the_median_and_the_ratio(capsys):
    bench = _load_benchmark()
    runs = {"micro": {
        "needle_eager": [dict(overhead=dict(forward=4.0, forward_backward=20.0)),
                         dict(overhead=dict(forward=6.0, forward_backward=30.0)),
                         dict(overhead=dict(forward=5.0, forward_backward=40.0))],
        "needle_compiled": [dict(overhead=None)],
        "torch": [dict(overhead=dict(forward=2.0, forward_backward=10.0))]}}
    rows = bench.overhead_rows(runs)
    assert rows["needle_eager"] == dict(forward=5.0, forward_backward=30.0)
    assert rows["needle_compiled"] is None
    assert rows["eager/torch"] == dict(forward=2.5, forward_backward=3.0)
    bench.print_overhead(rows)
    out = capsys.readouterr().out
    assert "((a + b) * a).sum() on 4 elements" in out and "2.50" in out and "3.00" in out


def _profile(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NEEDLE_BACKEND"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "python"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "profile_compiled.py"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_profile_of_a_compiled_step_lists_its_call_kinds(tmp_path):
    """benchmarks/profile_compiled.py replays makemore's program and sums each call kind: the
    kinds it lists are calls that program has (its Linear layers' matmuls, the SGD update), and
    the launch counts add up to the program's length."""
    proc = _profile(["makemore", "--steps", "2", "--top", "100"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    head, *rows = proc.stdout.strip().splitlines()
    assert head.startswith("makemore: ") and "1 thread(s)" in head
    launches = int(head.split(" launches")[0].rsplit(" ", 1)[1])
    kinds, times = {}, {}
    for row in rows:
        kind, ms, _, count = row.split()
        assert math.isfinite(float(ms)) and float(ms) >= 0, row
        kinds[kind] = int(count.lstrip("x"))
        times[kind] = float(ms)
    _positive(times["matmul"], "matmul")
    assert kinds["matmul"] >= 2 and kinds["sgd_step"] == 7  # makemore has 7 parameters
    assert sum(kinds.values()) == launches


def test_profile_refuses_an_unknown_workload(tmp_path):
    proc = _profile(["no_such_model"], tmp_path)
    assert proc.returncode == 2 and "no_such_model" in proc.stderr and "mlp" in proc.stderr
