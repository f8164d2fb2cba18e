"""`rodimus-lab bench host`: the host-time benchmark runs on CPU through the kernel path (launches stubbed),
counts its ops and restores what it patched. No wall-clock assertions: timing is the benchmark's job."""

import collections
import os

import pytest

pytest.importorskip("triton")

from rodimus_lab import model as model_module  # noqa: E402
from rodimus_lab.bench import host  # noqa: E402
from rodimus_lab.cli import main  # noqa: E402

TINY = dict(d_model=32, n_layers=2, n_heads=2, seq_len=32, batch=1, window=16)


def test_every_model_takes_its_path_and_counts_are_positive():
    results = host.measure(["rodimus", "rodimus_plus", "transformer"], steps=1, repeats=1, warmup=1, **TINY)
    rows = {r["model"]: r for r in results["rows"]}
    for name, row in rows.items():
        assert row["host_ms"] > 0 and row["aten_ops"] > 0 and row["kernel_ops"] > 0, name
    # per layer the pre-norm, conv, value gate, DDTS and gated norm, forward and backward; the final norm
    ops = rows["rodimus"]["kernel_op_names"]
    for op in ("short_conv_silu", "value_gate", "ddts", "gated_rmsnorm"):
        assert ops[f"rodimus::{op}"] == ops[f"rodimus::{op}_backward"] == 2, op
    assert ops["rodimus::rms_norm"] == ops["rodimus::rms_norm_backward"] == 3
    assert rows["rodimus"]["triton_launches"] >= rows["rodimus"]["kernel_ops"] == 2 * 2 * 4 + 2 * 3
    assert rows["rodimus_plus"]["kernel_op_names"]["rodimus::sw_ska_backward"] == 2
    assert rows["transformer"]["aten_op_names"].get("aten._scaled_dot_product_flash_attention_for_cpu") == 2


def test_the_patches_are_undone(monkeypatch):
    from triton.runtime.interpreter import InterpretedFunction

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    use_sdpa, run = model_module._use_sdpa, InterpretedFunction.run
    with host.kernel_path_without_launches(collections.Counter()):
        assert os.environ["TRITON_INTERPRET"] == "1" and InterpretedFunction.run is not run
    assert "TRITON_INTERPRET" not in os.environ and model_module._use_sdpa is use_sdpa
    assert InterpretedFunction.run is run


def test_cli_prints_the_table(capfd):
    main(["bench", "host", "--models", "rodimus", "--n-layers", "1", "--steps", "1", "--repeats", "1"])
    out, err = capfd.readouterr()
    assert "Rodimus" in out and "host ms/step" in out and "USDT" not in out + err
