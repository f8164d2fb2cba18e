"""The `rodimus-lab` command's threads: OMP_WAIT_POLICY=PASSIVE set before torch loads (rodimus_lab_entry),
unless the user chose a policy, and the demo's thread count (cli.demo_threads)."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from rodimus_lab import cli

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


@pytest.mark.parametrize("policy, cores, expected", [
    (None, 2, 1),            # spinning threads: one
    ("ACTIVE", 8, 1),
    ("PASSIVE", 2, 2),
    ("passive", 16, 2),      # OpenMP reads the value in any case
    ("PASSIVE", 1, 1),       # never more threads than cores
])
def test_demo_threads(monkeypatch, policy, cores, expected):
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert cli.demo_threads() == expected


@pytest.mark.parametrize("argv, expected", [
    (["demo"], 2),                       # the default: demo_threads()
    (["demo", "--threads", "3"], 3),     # a flag wins
])
def test_main_runs_the_demo_on_its_threads_and_restores_the_count(monkeypatch, argv, expected):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    seen = []
    monkeypatch.setattr(cli, "cmd_demo", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    assert cli.main(argv) == 0
    assert seen == [expected]
    assert torch.get_num_threads() == before
