"""benchmarks/diagnose_ddts_hang.py on the CPU (an offline compile for sm_90): a row per compile with its
figures, a compile over its time limit named as such, and the compiler stage read from a child's stack."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "diagnose_ddts_hang.py"


def diagnose(*args):
    """Two small kernels, fp32, n = 16: a few seconds each."""
    cmd = [sys.executable, str(SCRIPT), "--kernel", "ddts_prep_fwd", "ddts_step_kernel", "--dtype", "fp32",
           "--n", "16", "--jobs", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_row_per_kernel_and_precision():
    done = diagnose("--precision", "launched", "ieee")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("ddts_")]
    # a kernel with dots once per precision asked, one without (the decoding step) once as launched
    assert [row[:5] for row in rows] == [["ddts_prep_fwd", "fp32", "16", "launched", "tf32x3"],
                                         ["ddts_prep_fwd", "fp32", "16", "ieee", "ieee"],
                                         ["ddts_step_kernel", "fp32", "16", "launched", "-"]]
    for row in rows:
        seconds, shared, regs, stack = float(row[5]), *map(int, row[6:])
        assert seconds > 0 and shared > 0 and regs > 0 and stack >= 0


def test_a_compile_over_the_limit_is_named():
    done = diagnose("--timeout", "1")
    assert done.returncode == 1
    assert done.stdout.count("COMPILE TIMEOUT after 1 s") == 2


def test_the_stage_is_the_innermost_triton_frame():
    spec = importlib.util.spec_from_file_location("diagnose_ddts_hang", SCRIPT)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    root = os.sep.join(["", "venv", "site-packages", "triton"])
    stack = (f'Thread 0x1 (most recent call first):\n'
             f'  File "{root}/backends/nvidia/compiler.py", line 380 in make_llir\n'
             f'  File "{root}/compiler/compiler.py", line 300 in compile\n'
             f'  File "/repo/benchmarks/kernel_resources.py", line 80 in compile_kernel\n')
    assert module._stage(stack) == f"in make_llir (backends{os.sep}nvidia{os.sep}compiler.py)"
    assert module._stage('  File "/repo/x.py", line 1 in main\n').startswith("stage unknown")
