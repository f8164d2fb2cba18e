"""How much of each key enters the DDTS state (α̂, the key being unit-norm) and how fast the state forgets
(1 − α), per layer, at the initialisation and at every checkpoint of the given sweep run folders.

    python docs/results/sweep_trials/hgrn2_gate_cpu/probe_gates.py RUN_DIR [RUN_DIR ...]

Medians over key dims and the MQAR test examples' value tokens in the context (positions 1, 3, …, 2p − 1:
where a pair can be written, the short convolution bringing the key, the token itself the value); "elsewhere"
is every other position (keys, filler, queries). Reads config.json and checkpoints/ of each run folder.
"""

import json
import sys
from pathlib import Path

import torch

from rodimus_lab import ModelConfig, RodimusLM, seed_everything
from rodimus_lab.checkpoint import list_checkpoints, load_checkpoint
from rodimus_lab.data.recipe import DataConfig, build_data
from rodimus_lab.viz.probe import probe

EXAMPLES = 16


def gate_medians(model, inputs, pairs):
    """{layer: (α̂ at values, α̂ elsewhere, 1 − α at values)}: medians over EXAMPLES sequences."""
    values, other, forget = {}, {}, {}
    for ids in inputs[:EXAMPLES]:
        for layer, g in probe(model, ids).gates.items():
            is_value = torch.zeros(g["alpha_hat"].shape[0], dtype=torch.bool)
            is_value[1:2 * pairs:2] = True
            values.setdefault(layer, []).append(g["alpha_hat"][is_value])
            other.setdefault(layer, []).append(g["alpha_hat"][~is_value])
            forget.setdefault(layer, []).append(-torch.expm1(g["log_alpha"][is_value]))
    return {layer: tuple(torch.cat(d[layer]).median().item() for d in (values, other, forget)) for layer in values}


def main(run_dirs):
    for run_dir in map(Path, run_dirs):
        config = json.loads((run_dir / "config.json").read_text())
        data = DataConfig.from_dict(config["data"])
        _, test, _ = build_data(data)
        model_cfg = ModelConfig.from_dict(config["model"])
        seed_everything(config["train"]["seed"])      # the sweep draws a point's initial weights this way
        model = RodimusLM(model_cfg).eval()
        stages = [("init", None)] + [(f"step {int(p.stem.split('-')[1])}", p) for p in list_checkpoints(run_dir / "checkpoints")]
        print(f"{run_dir.name} (gate {model_cfg.gate}, n {model_cfg.mem_size}): median α̂ at values / elsewhere, 1 − α at values")
        for label, path in stages:
            if path is not None:
                load_checkpoint(path, model)
            cells = [f"layer {layer}: {k:.4f} / {o:.4f}, {f:.4f}"
                     for layer, (k, o, f) in gate_medians(model, test.inputs, test.num_kv_pairs).items()]
            print(f"  {label:9s} " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
