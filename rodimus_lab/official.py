"""Load weights saved by the official Rodimus code (codefuse-ai/rodimus) into RodimusLM.

Our parameter names are the official ones without the ``model.`` prefix and the
``inner_mixer`` level (notes §5), so loading is a rename. The official ``config.json``
(a dict: ``d_model``, ``n_layer``, ``mixer_cfg``, ``attn_cfg``, …) maps onto ModelConfig.
"""

from __future__ import annotations

import torch

from .attention import window_from_official
from .config import ModelConfig
from .model import RodimusLM

__all__ = ["config_from_official", "load_official", "official_state_dict"]


def config_from_official(official: dict) -> ModelConfig:
    """An official config.json (as a dict) → ModelConfig."""
    if not isinstance(official, dict):
        raise TypeError(f"config must be the official config.json as a dict or a ModelConfig, got {type(official).__name__}")
    for key in ("d_model", "n_layer", "vocab_size"):
        if key not in official:
            raise ValueError(f"official config lacks {key!r}; is this an official Rodimus config.json?")
    mixer = official.get("mixer_cfg") or {}
    attn = official.get("attn_cfg") or {}
    block = official.get("block_type", "rodimus")
    rank = mixer.get("input_gate_low_rank", "auto")
    fields = dict(
        vocab_size=official["vocab_size"],
        d_model=official["d_model"],
        n_layers=official["n_layer"],
        block=block,
        mem_size=mixer.get("mem_size", 64),
        expand=float(mixer.get("expand_ratio", 2)),
        conv_size=mixer.get("d_conv", 4),
        gate_rank=None if rank == "auto" else int(rank),
        norm_eps=float(official.get("norm_epsilon", 1e-5)),
        tie_embeddings=bool(official.get("tie_word_embeddings", False)),
    )
    if block == "rodimus_plus":
        heads = attn.get("num_heads") or official["d_model"] // 128
        heads_k, heads_v = attn.get("num_heads_k", 1), attn.get("num_heads_v", heads)
        layouts = {(1, heads): "ska", (1, 1): "mqa", (heads, heads): "mha"}
        if (heads_k, heads_v) not in layouts:
            if heads_k != heads_v:
                raise ValueError(f"official attn_cfg num_heads_k={heads_k}, num_heads_v={heads_v} has no rodimus-lab layout")
            layouts[(heads_k, heads_v)] = "gqa"
        window = attn.get("window_size")
        fields.update(
            n_heads=heads,
            attn_layout=layouts[(heads_k, heads_v)],
            n_kv_heads=heads_k if layouts[(heads_k, heads_v)] == "gqa" else None,
            window=window_from_official(window) if window and window > 0 else None,
            rope_base=float(attn.get("rotary_emb_base", 10000.0)),
            ffn_expand=float(attn.get("ffn_expand_ratio", 4 / 3)),
        )
    return ModelConfig(**fields)


def _our_name(official_name: str) -> str:
    name = official_name.removeprefix("model.")
    return name.replace("mixer.inner_mixer.", "mixer.")


def load_official(state_dict: dict, config) -> RodimusLM:
    """A model whose logits equal the official model's, from its state dict and config.

    ``config`` is the official config.json as a dict (or a ModelConfig). Missing or
    unexpected tensors, and shape mismatches, raise ValueError naming them.
    """
    cfg = config if isinstance(config, ModelConfig) else config_from_official(config)
    model = RodimusLM(cfg)
    renamed = {_our_name(k): v for k, v in state_dict.items()}
    if cfg.tie_embeddings:
        renamed.setdefault("lm_head.weight", renamed.get("embeddings.weight"))
    expected = model.state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    missing = sorted(set(expected) - set(renamed) - buffers)
    unexpected = sorted(set(renamed) - set(expected))
    if missing or unexpected:
        raise ValueError(f"official state dict does not match the config: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for name, tensor in renamed.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{name}: official shape {tuple(tensor.shape)} but config gives {tuple(expected[name].shape)}")
    model.load_state_dict(renamed, strict=False)
    return model


def official_state_dict(model: RodimusLM) -> dict[str, torch.Tensor]:
    """The inverse rename: our weights under the official checkpoint names."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name in {b for b, _ in model.named_buffers()}:
            continue
        if ".mixer." in name and not any(name.endswith(s) for s in (".fc.weight", ".act_norm.weight", ".out_proj.weight")):
            name = name.replace(".mixer.", ".mixer.inner_mixer.")
        out[name if name == "lm_head.weight" else "model." + name] = tensor
    return out
