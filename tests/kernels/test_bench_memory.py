"""`rodimus-lab bench memory`: the saved-for-backward accounting on the CPU kernel path, at toy sizes
(the numbers at the bench's sizes and their check against the H200's peaks: docs/benchmarks.md)."""

import torch

from rodimus_lab.bench import memory

TOY = dict(d_model=64, n_heads=2, vocab_size=128, window=32)


def test_bytes_go_to_named_modules_and_add_up():
    acc = memory.measure("rodimus_plus", seq_len=128, batch=2, n_layers=2, **TOY)
    by_module = acc.by_module()
    assert sum(by_module.values()) == acc.total == sum(s.nbytes for s in acc.saved)
    assert acc.total == acc.layer_bytes(0) + acc.layer_bytes(1) + acc.head_bytes()
    assert acc.layer_bytes(0, "activation") + acc.layer_bytes(0, "weight cast") == acc.layer_bytes(0)
    # every layer saves the same (what predict() scales by the number of layers)
    assert acc.layer_bytes(0) == acc.layer_bytes(1)
    tokens, d = 2 * 128, TOY["d_model"]
    # the pre-norms keep their fp32 input (the residual stream) and one fp32 rstd per token
    for norm in ("mixer_norm", "attn_norm", "ffn_norm"):
        assert by_module[f"layers.0.{norm}"] == tokens * (4 * d + 4)
    # the FFN's first product: its bf16 input and autocast's bf16 copy of its weight
    fc = [s for s in acc.saved if s.module == "layers.0.ffn.fc"]
    assert sorted((s.kind, s.nbytes) for s in fc) == [("activation", 2 * tokens * d),
                                                      ("weight cast", 2 * d * 2 * memory.model_config(
                                                          "rodimus_plus", **TOY).ffn_dim)]
    # the layer ran the kernels the GPU runs (the model's taps stayed off, which would take the reference)
    assert {"ddts_prep_fwd", "ddts_fwd_walk", "_fwd", "conv_silu_fwd", "value_gate_fwd", "gated_norm_fwd",
            "rms_norm_fwd", "rope_rotate"} <= set(acc.kernels)
    # the DDTS op keeps none of its fp32 chunk-start states [chunks, 1, n, m]: its backward re-walks for them
    cfg = memory.model_config("rodimus_plus", **TOY)
    assert not any(s.dtype == torch.float32 and s.shape[1:] == (1, cfg.mem_size, cfg.d_inner) for s in acc.saved)
    # the loss keeps the fp32 log-probs: 4 V bytes per token in the head
    assert acc.head_bytes("activation") >= tokens * 4 * TOY["vocab_size"]


def test_no_op_launches_save_what_real_launches_save():
    """Skipping the Triton launches changes values, not what autograd keeps."""
    shapes = {}
    for launch in (False, True):
        acc = memory.measure("rodimus_plus", seq_len=64, batch=1, n_layers=1, launch=launch, **TOY)
        shapes[launch] = sorted((s.module, s.shape, str(s.dtype), s.nbytes, s.kind) for s in acc.saved)
    assert shapes[False] == shapes[True]


def test_prediction_adds_its_parts():
    acc = memory.measure("rodimus", seq_len=64, batch=1, n_layers=2, **TOY)
    p = memory.predict(acc, n_layers=12, tokens=4096, vocab_size=TOY["vocab_size"])
    assert abs(p["peak"] - sum(p[k] for k in ("layers", "head", "casts", "static", "loss_grad"))) < 1e-12
    assert p["layers"] * memory.GIB == acc.layer_bytes(0, "activation") / acc.tokens * 12 * 4096
    assert "Rodimus" in memory.format_prediction([acc], vocab_size=TOY["vocab_size"])


def test_cli_dispatches_to_it(capsys):
    from rodimus_lab.cli import main as cli_main

    assert cli_main(["bench", "memory", "--models", "rodimus", "--d-model", "64", "--n-heads", "2",
                     "--vocab-size", "128", "--seq-len", "64", "--window", "32"]) == 0
    out = capsys.readouterr().out
    assert "layer total" in out and "peak GiB" in out
