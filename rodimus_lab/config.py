"""``ModelConfig``: the one configuration space of every rodimus-lab model.

Blocks, head layouts and DDTS ablations are fields, not subclasses, so a sweep over
architectures is a sweep over configs. Fields left ``None`` are derived (properties
below give the resolved values); a bad value raises ValueError naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

BLOCKS = ("rodimus", "rodimus_plus", "transformer")

# DDTS and its ablations. Each one switch of ``ModelConfig.gate``.
GATES = {
    "ddts": "(α, α̂) = (e^{−g}, g)^τ — Rodimus' tempered selection",
    "no_tau": "τ = 1: (α, α̂) = (e^{−g}, g), Mamba's discretisation pair",
    "no_alpha_hat": "α̂ = 1: decay gate only, GLA-like",
    "hgrn2": "α̂ = 1 − α: HGRN2-like coupled input gate",
    "mamba2": "one scalar g and τ per head instead of one per state dim, Mamba2-like",
    "retnet": "a fixed (not data-dependent) decay per state dim and α̂ = 1, RetNet-like",
    "no_decay": "α = 1 and α̂ = 1: plain linear attention",
}

ATTN_LAYOUTS = ("mha", "gqa", "mqa", "ska")
BACKENDS = ("auto", "reference", "triton")


def align8(x: float) -> int:
    """Round up to a multiple of 8 (as the official code sizes inner widths)."""
    return (int(x) + 7) // 8 * 8


class DictConfig:
    """to_dict / from_dict for the config dataclasses (ModelConfig, TrainConfig, DataConfig):
    an unknown key is an error that lists the known ones."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)


@dataclass
class ModelConfig(DictConfig):
    vocab_size: int = 8192
    d_model: int = 128
    n_layers: int = 2
    block: str = "rodimus"            # "rodimus" | "rodimus_plus" | "transformer"
    # Rodimus (DDTS) mixer
    mem_size: int = 64                # n: key dim of the state
    expand: float = 2.0               # m = align8(expand · d_model): value dim of the state
    conv_size: int = 4
    gate_rank: int | None = None      # ℓ of the low-rank value gate; None: max(d_model // 64, 16)
    gate: str = "ddts"                # a key of GATES
    short_conv: bool = True
    key_norm: bool = True             # L2-normalise k before it enters the state
    chunk_size: int = 16              # reference chunkwise path (16 is fastest on CPU)
    # attention (rodimus_plus, transformer)
    n_heads: int | None = None        # query heads; None: max(1, d_model // 128)
    attn_layout: str | None = None    # None: "ska" for rodimus_plus, "mha" for transformer
    n_kv_heads: int | None = None     # key/value heads of "gqa"
    window: int | None = None         # keys a query sees, itself included; None: all
    rope_base: float = 10000.0
    two_hop: bool = True              # Rodimus+: SW-SKA reaches the stream only through the FFN
    ffn_expand: float | None = None   # SwiGLU hidden = align8(ffn_expand · d); None: 4/3 (rodimus_plus), 8/3 (transformer)
    # model
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    init_std: float = 0.02
    max_seq_len: int | None = None    # optional limit on positions (None: unlimited)
    backend: str = "auto"             # "auto" (Triton on CUDA), "reference", "triton"

    def __post_init__(self):
        def need(field, ok, expected):
            if not ok:
                raise ValueError(
                    f"ModelConfig.{field} = {getattr(self, field)!r} is invalid: expected {expected}"
                )

        def is_int(x):
            return isinstance(x, int) and not isinstance(x, bool)

        for field in ("vocab_size", "d_model", "n_layers", "mem_size", "conv_size", "chunk_size"):
            need(field, is_int(getattr(self, field)) and getattr(self, field) >= 1, "an int ≥ 1")
        for field in ("gate_rank", "n_heads", "n_kv_heads", "window", "max_seq_len"):
            value = getattr(self, field)
            need(field, value is None or (is_int(value) and value >= 1), "None or an int ≥ 1")
        need("block", self.block in BLOCKS, f"one of {BLOCKS}")
        need("gate", self.gate in GATES, f"one of {tuple(GATES)}")
        need("backend", self.backend in BACKENDS, f"one of {BACKENDS}")
        need("attn_layout", self.attn_layout is None or self.attn_layout in ATTN_LAYOUTS,
             f"None or one of {ATTN_LAYOUTS}")
        need("expand", isinstance(self.expand, (int, float)) and self.expand > 0, "a number > 0")
        need("ffn_expand", self.ffn_expand is None or (isinstance(self.ffn_expand, (int, float)) and self.ffn_expand > 0),
             "None or a number > 0")
        need("norm_eps", isinstance(self.norm_eps, float) and self.norm_eps > 0, "a float > 0")
        need("init_std", isinstance(self.init_std, (int, float)) and self.init_std > 0, "a number > 0")
        need("rope_base", isinstance(self.rope_base, (int, float)) and self.rope_base > 1, "a number > 1")
        for field in ("short_conv", "key_norm", "two_hop", "tie_embeddings"):
            need(field, isinstance(getattr(self, field), bool), "True or False")
        if self.has_attention:
            need("n_heads", self.d_model % self.num_heads == 0,
                 f"a divisor of d_model = {self.d_model} (head_dim = d_model / n_heads)")
            need("n_heads", self.head_dim % 2 == 0, "a value giving an even head_dim (RoPE rotates pairs)")
            need("n_kv_heads", self.layout != "gqa" or (self.n_kv_heads is not None and self.num_heads % self.n_kv_heads == 0),
                 f"an int dividing n_heads = {self.num_heads} when attn_layout = 'gqa'")
        elif self.attn_layout is not None or self.window is not None:
            field = "attn_layout" if self.attn_layout is not None else "window"
            need(field, False, "None for block 'rodimus' (it has no attention)")

    # ---- derived sizes -------------------------------------------------------
    @property
    def has_mixer(self) -> bool:
        return self.block in ("rodimus", "rodimus_plus")

    @property
    def has_attention(self) -> bool:
        return self.block in ("rodimus_plus", "transformer")

    @property
    def d_inner(self) -> int:
        """m, the value dim of the DDTS state."""
        return align8(self.expand * self.d_model)

    @property
    def low_rank(self) -> int:
        return self.gate_rank if self.gate_rank is not None else max(self.d_model // 64, 16)

    @property
    def num_heads(self) -> int:
        return self.n_heads if self.n_heads is not None else max(1, self.d_model // 128)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def layout(self) -> str:
        if self.attn_layout is not None:
            return self.attn_layout
        return "ska" if self.block == "rodimus_plus" else "mha"

    @property
    def num_key_heads(self) -> int:
        return {"mha": self.num_heads, "gqa": self.n_kv_heads, "mqa": 1, "ska": 1}[self.layout]

    @property
    def num_value_heads(self) -> int:
        return {"mha": self.num_heads, "gqa": self.n_kv_heads, "mqa": 1, "ska": self.num_heads}[self.layout]

    @property
    def ffn_dim(self) -> int:
        ratio = self.ffn_expand if self.ffn_expand is not None else (4 / 3 if self.block == "rodimus_plus" else 8 / 3)
        return align8(ratio * self.d_model)

    @property
    def residuals_per_layer(self) -> int:
        """How many out_proj write into the stream per layer (the init rescale √(r·L))."""
        return {"rodimus": 1, "rodimus_plus": 3, "transformer": 2}[self.block]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
