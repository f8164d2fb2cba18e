"""benchmarks/tune_kernels.py on the CPU (Triton's interpreter, tiny shapes): every family is swept and
written out, and a candidate that computes something else is reported as mismatching, not timed.
No wall-clock assertions: the times are the GPU run's business."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "tune_kernels.py"
ENV = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}


def test_every_family_is_checked_and_written(tmp_path):
    out = tmp_path / "tune.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--seq", "40", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert list(report["families"]) == ["conv", "sw_ska_fwd", "sw_ska_dq", "sw_ska_dkdv", "ddts"]
    for name, family in report["families"].items():
        rows = family["rows"]
        assert len(rows) == 2 and rows[0]["current"] and not rows[0]["patches"] and rows[1]["patches"], name
        for row in rows:   # another tiling of the same sums: equal within rounding, and timed
            assert row["ok"] and row["max_error"] < 1e-4 and row["fwd_ms"] > 0 and row["bwd_ms"] > 0, (name, row)
        assert name in done.stdout and "* " in done.stdout


PLANTED = """
import sys, torch
sys.path.insert(0, "benchmarks")
import tune_kernels as tk
from rodimus_kernels import glue
a = tk.options(["--device", "cpu", "--seq", "24"])
family = tk.conv_family(a, torch.Generator().manual_seed(0))
taps = glue._four_taps
# the taps in reverse order: a convolution that runs, but not this one
family.candidates.append(tk.Candidate("planted", {("rodimus_kernels.glue", "_four_taps"): lambda w: taps(w).flip(-1)}))
result = tk.sweep(family, budget_s=60, warmup=0, reps=1, cuda=False)
assert glue._four_taps is taps, "the patch was not undone"
print(tk.table("conv", result))
planted = result["rows"][-1]
print("PLANTED", planted["ok"], planted["max_error"], "fwd_ms" in planted)
"""


def test_a_wrong_candidate_is_reported_as_mismatching():
    done = subprocess.run([sys.executable, "-c", PLANTED], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    ok, error, timed = done.stdout.split("PLANTED")[1].split()
    assert ok == "False" and float(error) > 1e-2 and timed == "False"
    assert "planted" in done.stdout and "MISMATCH" in done.stdout


LOST = """
import sys, torch
sys.path.insert(0, "benchmarks")
import tune_kernels as tk
a = tk.options(["--device", "cpu", "--seq", "24"])
family = tk.conv_family(a, torch.Generator().manual_seed(0))
def lost(w):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")
family.candidates[1:] = [tk.Candidate("breaks", {("rodimus_kernels.glue", "_four_taps"): lost}), family.candidates[1]]
result = tk.sweep(family, budget_s=60, warmup=0, reps=1, cuda=False)
print(tk.table("conv", result))
print("ROWS", len(result["rows"]), "SKIPPED", len(result["skipped"]))
"""


def test_a_lost_cuda_context_stops_the_sweep_and_says_so():
    """After an illegal memory access every CUDA call of the process fails: the candidates after it are
    listed as not run, not reported as failing themselves."""
    done = subprocess.run([sys.executable, "-c", LOST], capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ROWS 2 SKIPPED 1" in done.stdout
    assert "breaks broke the CUDA context" in done.stdout
