"""Load weights saved by the official Rodimus code (codefuse-ai/rodimus) into RodimusLM.

Our parameter names are the official ones without the ``model.`` prefix and the
``inner_mixer`` level (docs/equations.md), so loading is a rename. The official ``config.json``
(a dict: ``d_model``, ``n_layer``, ``mixer_cfg``, ``attn_cfg``, …) maps onto ModelConfig:
every key the official modeling code reads is either mapped, or known not to change the
model's outputs (kernel switches, dropout, initialisation), or refused with an error that
names it. :mod:`rodimus_lab.pretrained` reads whole released snapshot folders.
"""

from __future__ import annotations

import math

import torch

from .attention import window_from_official
from .config import ModelConfig
from .model import RodimusLM

__all__ = ["OfficialConfigError", "config_from_official", "config_to_official", "load_official", "official_state_dict"]


class OfficialConfigError(ValueError):
    """An official config.json holds a key or value rodimus-lab cannot reproduce; ``key`` names it."""

    def __init__(self, key: str, message: str):
        super().__init__(f"official config key {key!r}: {message}")
        self.key = key


# Top-level keys the official modeling code reads that cannot change the outputs of a model in eval
# mode (everything else at the top level is Hugging Face bookkeeping the model never reads).
_NO_EFFECT = {
    "residual_in_fp32": "rodimus-lab always keeps the residual stream in float32",
    "use_fast_path": "a kernel switch", "use_fused_swiglu": "a kernel switch",
    "use_fused_cross_entropy": "a kernel switch",
    "dropout": "training only", "activation_dropout": "training only", "attention_dropout": "training only",
    "rescale_prenorm_residual": "initialisation only", "pad_token_id": "padding_idx only zeroes a gradient",
    "no_weight_decay_on_bias": "optimiser only", "no_weight_decay_on_norm": "optimiser only",
    "no_weight_decay_on_embedding": "optimiser only",
}
# Keys of mixer_cfg / attn_cfg the official RodimusFlow / SlideWindowSharedKeyAttention accept (they
# take these dicts as keyword arguments, so any other key fails there too).
_MIXER_KEYS = {"d_conv", "expand_ratio", "mem_size", "input_gate_low_rank", "mode", "normalize_epsilon",
               "post_norm_epsilon"}
_ATTN_KEYS = {"num_heads", "num_heads_k", "num_heads_v", "window_size", "softmax_scale", "rotary_emb_dim",
              "rotary_emb_base", "rotary_emb_scale_base", "rotary_emb_interleaved", "ffn_expand_ratio"}
# F.normalize(k, eps) divides by max(‖k‖, eps); rodimus-lab (and its kernels) use eps = 1e-12. The
# released Rodimus+-Coder configs say 1e-5, which changes only keys shorter than 1e-5.
_MAX_KEY_NORM_EPS = 1e-5


def _unknown(section: str, given: dict, known: set) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise OfficialConfigError(f"{section}.{unknown[0]}", f"the official code does not accept it "
                                  f"(known {section} keys: {sorted(known)})")


def config_from_official(official: dict) -> ModelConfig:
    """An official config.json (as a dict) → ModelConfig; keys that would change the model and that
    rodimus-lab cannot reproduce raise :class:`OfficialConfigError` naming the key."""
    if not isinstance(official, dict):
        raise TypeError(f"config must be the official config.json as a dict or a ModelConfig, got {type(official).__name__}")
    for key in ("d_model", "n_layer", "vocab_size"):
        if key not in official:
            raise OfficialConfigError(key, "missing; is this an official Rodimus config.json?")
    mixer = official.get("mixer_cfg") or {}
    attn = official.get("attn_cfg") or {}
    block = official.get("block_type", "rodimus")
    if block not in ("rodimus", "rodimus_plus"):
        raise OfficialConfigError("block_type", f"{block!r} is not 'rodimus' or 'rodimus_plus'")
    if official.get("use_norm_embedding"):
        raise OfficialConfigError("use_norm_embedding", "an RMSNorm on the embeddings is not implemented in rodimus-lab")
    _unknown("mixer_cfg", mixer, _MIXER_KEYS)
    key_norm_eps = mixer.get("normalize_epsilon")
    if key_norm_eps is not None and float(key_norm_eps) > _MAX_KEY_NORM_EPS:
        raise OfficialConfigError("mixer_cfg.normalize_epsilon", f"{key_norm_eps} > {_MAX_KEY_NORM_EPS}: rodimus-lab "
                                  "normalises keys with eps = 1e-12, which agrees only for eps ≤ 1e-5")
    rank = mixer.get("input_gate_low_rank", "auto")
    mem_size = mixer.get("mem_size", 64)
    fields = dict(
        vocab_size=official["vocab_size"],
        d_model=official["d_model"],
        n_layers=official["n_layer"],
        block=block,
        mem_size=mem_size,
        expand=float(mixer.get("expand_ratio", 2)),
        conv_size=mixer.get("d_conv", 4),
        gate_rank=None if rank == "auto" else int(rank),
        norm_eps=float(official.get("norm_epsilon", 1e-5)),
        init_std=float(official.get("initializer_range", 0.02)),
        tie_embeddings=bool(official.get("tie_word_embeddings", False)),
        # the official model multiplies the embeddings by √mem_size (sic: the DDTS state's key dim)
        embed_scale=math.sqrt(mem_size) if official.get("use_scale_embedding") else 1.0,
    )
    if block == "rodimus_plus":   # (a Rodimus model never reads attn_cfg)
        fields.update(_attention_fields(official, attn))
    return ModelConfig(**fields)


def _attention_fields(official: dict, attn: dict) -> dict:
    _unknown("attn_cfg", attn, _ATTN_KEYS)
    if attn.get("softmax_scale") == "norm":
        raise OfficialConfigError("attn_cfg.softmax_scale", "'norm' (unit-norm q and k with per-head scales) is "
                                  "not implemented in rodimus-lab")
    # (any other softmax_scale is ignored by the official code too: it attends with 1/√head_dim)
    heads = attn.get("num_heads") or official["d_model"] // 128
    if heads < 1 or official["d_model"] % heads:
        raise OfficialConfigError("attn_cfg.num_heads", f"{heads} heads do not divide d_model = {official['d_model']}")
    head_dim = official["d_model"] // heads
    heads_k = attn.get("num_heads_k") or 1          # (None crashes the official code; we read it as SKA)
    heads_v = attn.get("num_heads_v") or heads
    layouts = {(1, heads): "ska", (1, 1): "mqa", (heads, heads): "mha"}
    if heads_k == heads_v and 1 < heads_k < heads and heads % heads_k == 0:
        layouts[(heads_k, heads_v)] = "gqa"
    if (heads_k, heads_v) not in layouts:
        raise OfficialConfigError("attn_cfg.num_heads_k", f"num_heads_k = {heads_k}, num_heads_v = {heads_v} with "
                                  f"num_heads = {heads} is none of MHA, GQA, MQA, SKA")
    layout = layouts[(heads_k, heads_v)]
    rope_dim = attn.get("rotary_emb_dim", -1)
    rope_dim = None if rope_dim is None or rope_dim < 0 else int(rope_dim)   # < 0: the whole head; 0: no RoPE
    if rope_dim is not None and (rope_dim > head_dim or rope_dim % 2):
        raise OfficialConfigError("attn_cfg.rotary_emb_dim", f"{rope_dim} is not an even number ≤ head dim {head_dim}")
    xpos = attn.get("rotary_emb_scale_base")
    max_positions = official.get("max_position_embeddings")
    if xpos is not None and not max_positions:
        raise OfficialConfigError("attn_cfg.rotary_emb_scale_base", "needs max_position_embeddings: the official "
                                  "XPos table is centred on half of it")
    window = attn.get("window_size")
    return dict(
        n_heads=heads,
        attn_layout=layout,
        n_kv_heads=heads_k if layout == "gqa" else None,
        window=window_from_official(window) if window and window > 0 else None,
        rope_base=float(attn.get("rotary_emb_base", 10000.0)),
        rope_dim=rope_dim,
        rope_interleaved=bool(attn.get("rotary_emb_interleaved", False)),
        xpos_scale_base=None if xpos is None else float(xpos),
        # with XPos the table spans max_position_embeddings positions; beyond it the official centre moves
        max_seq_len=int(max_positions) if xpos is not None else None,
        ffn_expand=float(attn.get("ffn_expand_ratio", 4 / 3)),
    )


def config_to_official(cfg: ModelConfig) -> dict:
    """The inverse of :func:`config_from_official`: an official config.json (as a dict) for ``cfg``;
    ValueError naming the field if the official code cannot express it."""
    def need(ok: bool, field: str, why: str):
        if not ok:
            raise ValueError(f"ModelConfig.{field} = {getattr(cfg, field)!r} has no official equivalent: {why}")

    need(cfg.has_mixer, "block", "the official code builds Rodimus and Rodimus+ only")
    for field, value in (("gate", "ddts"), ("key_norm", True), ("short_conv", True), ("two_hop", True)):
        need(getattr(cfg, field) == value, field, f"the official model is {field} = {value!r}")
    need(cfg.embed_scale in (1.0, math.sqrt(cfg.mem_size)), "embed_scale", "it scales by 1 or √mem_size only")
    official = {
        "block_type": cfg.block, "d_model": cfg.d_model, "n_layer": cfg.n_layers, "vocab_size": cfg.vocab_size,
        "norm_epsilon": cfg.norm_eps, "initializer_range": cfg.init_std, "tie_word_embeddings": cfg.tie_embeddings,
        "use_scale_embedding": cfg.embed_scale != 1.0, "max_position_embeddings": cfg.max_seq_len or 2048,
        "mixer_cfg": {"mem_size": cfg.mem_size, "expand_ratio": cfg.expand, "d_conv": cfg.conv_size,
                      "input_gate_low_rank": "auto" if cfg.gate_rank is None else cfg.gate_rank},
    }
    if cfg.block == "rodimus_plus":
        official["attn_cfg"] = {
            "num_heads": cfg.num_heads, "num_heads_k": cfg.num_key_heads, "num_heads_v": cfg.num_value_heads,
            # official window_size W: W // 2 earlier keys plus the query's own
            "window_size": None if cfg.window is None else (2 * (cfg.window - 1) if cfg.window > 1 else 1),
            "rotary_emb_dim": -1 if cfg.rope_dim is None else cfg.rope_dim, "rotary_emb_base": cfg.rope_base,
            "rotary_emb_interleaved": cfg.rope_interleaved, "rotary_emb_scale_base": cfg.xpos_scale_base,
            "ffn_expand_ratio": cfg.ffn_expand if cfg.ffn_expand is not None else 4 / 3,
        }
    return official


def _our_name(official_name: str) -> str:
    name = official_name.removeprefix("model.")
    return name.replace("mixer.inner_mixer.", "mixer.")


def load_official(state_dict: dict, config, *, sources: dict | None = None) -> RodimusLM:
    """A model whose logits equal the official model's, from its state dict and config.

    ``config`` is the official config.json as a dict (or a ModelConfig). ``sources`` (optional) maps
    each official tensor name to the file it came from, for the error messages. Missing or unexpected
    tensors and shape mismatches raise ValueError naming the tensor (and its file).
    """
    cfg = config if isinstance(config, ModelConfig) else config_from_official(config)
    where = {_our_name(k): f" in {sources[k]}" for k in (sources or {})}
    renamed = {_our_name(k): v for k, v in state_dict.items()}
    if cfg.tie_embeddings:
        renamed.setdefault("lm_head.weight", renamed.get("embeddings.weight"))
    with torch.device("meta"):   # shapes only: the weights come from the state dict
        model = RodimusLM(cfg)
    expected = model.state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    missing = sorted(set(expected) - set(renamed) - buffers)
    unexpected = sorted(set(renamed) - set(expected))
    if unexpected:
        name = unexpected[0]
        raise ValueError(f"unexpected tensor {_official_name(name)!r}{where.get(name, '')}: the config has no such "
                         f"parameter ({len(unexpected)} unexpected in all)")
    if missing:
        raise ValueError(f"missing tensor {_official_name(missing[0])!r}: the config needs it and no file holds it "
                         f"({len(missing)} missing in all)")
    for name, tensor in renamed.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{_official_name(name)!r}{where.get(name, '')} has shape {tuple(tensor.shape)} but "
                             f"the config gives {tuple(expected[name].shape)}")
    model.load_state_dict(renamed, strict=False, assign=True)
    if cfg.tie_embeddings:   # assign=True gave each name its own Parameter: tie them again
        model.lm_head.weight = model.embeddings.weight
    if buffers:   # derived, never saved (e.g. the RetNet decays): compute them for real
        real = RodimusLM(cfg)
        for name in buffers:
            module, _, attr = name.rpartition(".")
            setattr(model.get_submodule(module), attr, real.get_buffer(name))
    return model


def _official_name(name: str) -> str:
    """Our parameter name → the official checkpoint's."""
    if ".mixer." in name and not any(name.endswith(s) for s in (".fc.weight", ".act_norm.weight", ".out_proj.weight")):
        name = name.replace(".mixer.", ".mixer.inner_mixer.")
    return name if name == "lm_head.weight" else "model." + name


def official_state_dict(model: RodimusLM) -> dict[str, torch.Tensor]:
    """The inverse rename: our weights under the official checkpoint names."""
    buffers = {b for b, _ in model.named_buffers()}
    return {_official_name(name): t for name, t in model.state_dict().items() if name not in buffers}
