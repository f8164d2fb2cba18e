"""Render the key rodimus-lab figures to PNG under docs/figures/ (for the README and a look by eye).

    python docs/build_figures.py            # needs kaleido (pip install kaleido) and a Chrome/Chromium;
                                            # set BROWSER_PATH=/usr/bin/chromium if kaleido cannot find one

Every figure comes from rodimus_lab.viz. The "mqar_*" figures come from a small Rodimus+ trained here
(about ten minutes on a 2-core CPU); "decode_cost_h200" from the measured results file in docs/results;
the others are analytic or from untrained models (seconds). tests/test_viz.py runs ``figures(mqar_steps=…)``
with a few training steps, so the code that drew the committed PNGs keeps working; re-render after changing
a figure function or the demo preset. Each run prints what the trained model measured (accuracy, α range).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from rodimus_lab import ModelConfig, RodimusLM, seed_everything, viz
from rodimus_lab.attention import attention
from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset, mqar_token_labels
from rodimus_lab.ddts import ddts_gates, ddts_parallel, effective_key
from rodimus_lab.train import Trainer, TrainConfig

OUT = Path(__file__).resolve().parent / "figures"


def figures(mqar_steps: int = 1500) -> dict:
    seed_everything(0)
    T = 32
    small_plus = ModelConfig(vocab_size=256, d_model=256, n_layers=2, block="rodimus_plus", mem_size=64,
                             n_heads=2, window=16)
    figs = {
        "rodimus_plus_block": viz.block_diagram(small_plus),
        "transformer_block": viz.block_diagram(ModelConfig(block="transformer", d_model=256, n_heads=2), detail=False),
        "selection_curves": viz.selection_curves(),
        "memory_vs_context": viz.memory_vs_context({
            "Transformer++ 1.3B (MHA)": ModelConfig(block="transformer", d_model=2048, n_layers=24, n_heads=16),
            "Rodimus 1.4B (n = 64)": ModelConfig(d_model=2048, n_layers=48),
            "Rodimus+ 1.6B (SKA, window 2049)": ModelConfig(block="rodimus_plus", d_model=2048, n_layers=24,
                                                           n_heads=16, window=2049),
        }),
    }
    # DDTS's implicit attention with gates from random logits
    B, H, n, m = 1, 1, 16, 8
    q, k = torch.randn(B, T, H, n), torch.randn(B, T, H, n)
    log_alpha, alpha_hat = ddts_gates(torch.randn(B, T, H, n) - 2, torch.randn(B, T, H, n))
    _, attn = ddts_parallel(q, effective_key(k, alpha_hat), torch.randn(B, T, H, m), log_alpha)
    figs["ddts_implicit_attention"] = viz.attention_matrix(attn[0, 0], title="DDTS implicit attention (random gates)")
    # head layouts, 4 query heads, window 8
    Hq, d = 4, 16
    qh = torch.randn(1, T, Hq, d)
    layouts = {"MHA": (Hq, Hq), "GQA (2 groups)": (2, 2), "MQA": (1, 1), "SKA": (1, Hq)}
    maps = {name: attention(qh, torch.randn(1, T, hk, d), torch.randn(1, T, hv, d), window=8, return_weights=True)[1]
            for name, (hk, hv) in layouts.items()}
    figs["head_layouts"] = viz.layout_maps(maps, window=8, title="Sliding-window attention (8 keys) per layout")
    # probe an (untrained) Rodimus+ model
    model = RodimusLM(small_plus).eval()
    result = viz.probe(model, torch.randint(0, 256, (T,)))
    figs["gates_untrained"] = viz.gate_heatmaps(result.gates[0], title="DDTS gates of layer 0 (untrained model)")
    figs["state_spectrum_untrained"] = viz.state_spectrum(result.states(0), title="State spectrum, layer 0 (untrained)")
    figs["decode_cost_h200"] = viz.decode_cost(OUT.parent / "results" / "decode_h200.json")
    figs.update(trained_mqar_figures(mqar_steps))
    return figs


def trained_mqar_figures(steps: int = 1500) -> dict:
    """A small Rodimus+ trained on MQAR (L = 64, 4 pairs; the `rodimus-lab demo` settings with more
    steps, about ten minutes on a 2-core CPU): its gates, state and attention on a test example."""
    torch.set_num_threads(1)   # this model's ops are too small to gain from threads; on a shared CPU they cost
    seed_everything(0)
    task = mqar_preset("demo", num_train=10_000, num_test=256)
    train, test = make_mqar_splits(task, seed=0)
    config = ModelConfig(vocab_size=task.vocab_size, d_model=64, n_layers=2, block="rodimus_plus", mem_size=16,
                         n_heads=2, window=8)
    model = RodimusLM(config)
    history = Trainer(model, train, test, TrainConfig(max_steps=steps, batch_size=64, lr=3e-3, warmup_steps=min(20, steps),
                                                      eval_every=min(50, steps), stop_at_accuracy=0.97,
                                                      progress=False)).fit()
    accuracy = [r for r in history if r["kind"] == "eval"][-1]["eval_accuracy"]
    ids, labels = test[0]
    tokens = mqar_token_labels(ids, labels, task.num_kv_pairs)
    result = viz.probe(model.eval(), ids)
    alpha = result.gates[0]["log_alpha"].exp()
    print(f"trained MQAR model: {len(history)} records, test accuracy {accuracy:.3f}, layer-0 α on test example 0 "
          f"in [{float(alpha.min()):.4f}, {float(alpha.max()):.5f}], median {float(alpha.median()):.5f}; per token, "
          "mean α: " + " ".join(f"{t}:{a:.3f}" for t, a in zip(tokens, alpha.mean(1).tolist())))
    where = f"Rodimus+ trained on MQAR (test accuracy {accuracy:.2f})"
    return {
        "mqar_training": viz.training_curves(history, y=("loss", "eval_accuracy"), title=f"MQAR training: {where}"),
        "mqar_gates": viz.gate_heatmaps({k: result.gates[0][k] for k in ("log_alpha", "alpha_hat")}, tokens,
                                        title=f"DDTS gates, layer 0 — {where}"),
        "mqar_write_keep": viz.write_keep_profile(result.gates[0], tokens, title=f"Write and keep per token — {where}"),
        "mqar_state_spectrum": viz.state_spectrum(result.states(0), tokens, title=f"State spectrum, layer 0 — {where}"),
        "mqar_sw_ska": viz.head_maps(result.attention[1], tokens, window=config.window,
                                     title=f"SW-SKA, layer 1 — {where}"),
    }


def main() -> None:
    if "BROWSER_PATH" not in os.environ and shutil.which("chromium"):
        os.environ["BROWSER_PATH"] = shutil.which("chromium")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, fig in figures().items():
        path = OUT / f"{name}.png"
        for attempt in range(3):   # kaleido's browser page is now and then not ready ("kaleido_scopes is not defined")
            try:
                fig.write_image(path, scale=1.5)
                break
            except Exception as error:
                if attempt == 2:
                    raise
                print(f"retrying {name}: {type(error).__name__}")
        print(f"wrote {path.relative_to(OUT.parent.parent)}")


if __name__ == "__main__":
    main()
