"""The `rodimus-lab` command's threads: OMP_WAIT_POLICY=PASSIVE set before torch loads (rodimus_lab_entry),
unless the user chose a policy, and the demo's thread count: the cores other processes leave free
(rodimus_lab.cpu_threads)."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from rodimus_lab import cli, cpu_threads

ROOT = Path(__file__).resolve().parents[1]

# Runs the command's entry point in a fresh interpreter and prints OMP_WAIT_POLICY as it was when torch
# started to load (what OpenMP reads), and whether importing the entry module alone loaded torch.
SPY = """
import os, sys

class TorchImportSpy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("policy when torch loads:", os.environ.get("OMP_WAIT_POLICY"))
            sys.meta_path.remove(self)

sys.meta_path.insert(0, TorchImportSpy())
import rodimus_lab_entry
print("torch loaded by the import:", "torch" in sys.modules)
sys.argv = ["rodimus-lab", "info", "--d-model", "32", "--n-layers", "1", "--context", "8"]
sys.exit(rodimus_lab_entry.main())
"""


def _entry_output(policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run([sys.executable, "-c", SPY], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_console_script_is_the_entry_module():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["rodimus-lab"] == "rodimus_lab_entry:main"
    assert "rodimus_lab_entry" in project["tool"]["setuptools"]["py-modules"]


def test_the_entry_sets_a_passive_wait_policy_before_torch_loads():
    out = _entry_output(None)
    assert "torch loaded by the import: False" in out
    assert "policy when torch loads: PASSIVE" in out
    assert "fixed recurrent state" in out   # the command ran


def test_the_entry_keeps_the_users_wait_policy():
    assert "policy when torch loads: ACTIVE" in _entry_output("ACTIVE")


def _sample(busy, own, wall):
    return cpu_threads.CpuSample(busy, own, wall)


def test_busy_elsewhere_counts_other_processes_cores():
    before = _sample(100.0, 5.0, 10.0)
    assert cpu_threads.busy_elsewhere(before, _sample(104.0, 7.0, 12.0)) == pytest.approx(1.0)   # (4 − 2) / 2 s
    assert cpu_threads.busy_elsewhere(before, _sample(102.0, 7.0, 12.0)) == 0.0                 # only this process
    assert cpu_threads.busy_elsewhere(before, _sample(100.0, 5.0, 10.0)) == 0.0                 # no time passed


def test_cpu_sample_reads_busy_time_from_proc_stat(tmp_path):
    stat = tmp_path / "stat"   # user nice system idle iowait irq softirq steal guest guest_nice (ticks)
    stat.write_text("cpu  400 100 200 5000 300 10 20 30 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert cpu_threads.cpu_sample(str(stat)).busy == pytest.approx(760 / os.sysconf("SC_CLK_TCK"))
    assert cpu_threads.cpu_sample(str(tmp_path / "missing")) is None


def test_a_real_sample_counts_this_process_on_the_machine_too():
    before = cpu_threads.cpu_sample()
    if before is None:
        pytest.skip("no /proc/stat here")
    after = before
    while after.own - before.own < 0.3 and after.wall < before.wall + 30:   # 0.3 s of CPU ourselves
        after = cpu_threads.cpu_sample()
    own = after.own - before.own
    assert own >= 0.3
    assert after.busy - before.busy > 0.8 * own   # our own time is in the machine's busy time, and subtracted


@pytest.mark.parametrize("policy, cores, taken, expected", [
    (None, 2, 0.0, 1),            # idle threads would spin: one thread
    ("ACTIVE", 8, 0.0, 1),
    ("PASSIVE", 2, 0.0, 2),       # an idle 2-core machine
    ("passive", 16, 0.0, 2),      # OpenMP reads the value in any case; never more than asked for
    ("PASSIVE", 2, 1.0, 1),       # another process keeps one of the two cores busy
    ("PASSIVE", 2, 0.3, 2),       # ... or only now and then
    ("PASSIVE", 4, 2.9, 1),
    ("PASSIVE", 1, 0.0, 1),       # never more threads than cores
])
def test_free_threads(monkeypatch, policy, cores, taken, expected):
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(cpu_threads, "cpu_sample", lambda: _sample(10.0 + taken, 0.0, 1.0))
    assert cpu_threads.free_threads(2, _sample(10.0, 0.0, 0.0)) == expected
    if taken == 0.0:   # not measurable (not Linux): every usable core counts as free
        assert cpu_threads.free_threads(2, None) == expected


@pytest.mark.parametrize("argv, expected", [
    ([], "(1 torch thread)"),                  # spinning idle threads (no PASSIVE policy here): one thread
    (["--threads", "2"], "(2 torch threads)"),  # a flag wins
])
def test_the_demo_runs_on_its_threads_and_main_restores_the_count(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    before = torch.get_num_threads()
    assert cli.main(["demo", "--fast", "--out", str(tmp_path), "--progress", "false", *argv]) == 0
    assert expected in capsys.readouterr().out
    assert torch.get_num_threads() == before
