"""``ModelConfig``: the one configuration space of every rodimus-lab model.

Blocks, head layouts and DDTS ablations are fields, not subclasses, so a sweep over
architectures is a sweep over configs. Fields left ``None`` are derived (properties
below give the resolved values); a bad value raises ValueError naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ModelConfig", "DictConfig", "ConfigError", "Allowed", "setting", "int_from", "number_above", "number_from",
           "number_in", "one_of", "BOOL", "BLOCKS", "GATES", "ATTN_LAYOUTS", "BACKENDS", "align8"]

BLOCKS = ("rodimus", "rodimus_plus", "transformer")

# DDTS and its ablations. Each one switch of ``ModelConfig.gate``.
GATES = {
    "ddts": "(α, α̂) = (exp(−g), g)^τ — Rodimus' tempered selection",
    "no_tau": "τ = 1: (α, α̂) = (exp(−g), g), Mamba's discretisation pair",
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


# ----------------------------------------------------------------------------- fields
# Every config field carries its meaning and its allowed values (``setting``): the one source
# for validation (``DictConfig.__post_init__``), for error messages and for ``rodimus-lab --help``.

@dataclass(frozen=True)
class Allowed:
    """What a field accepts: a test, the words that say it, and the values when they are a list."""
    words: str
    test: Callable[[object], bool]
    choices: tuple = ()

    def or_none(self) -> "Allowed":
        return Allowed(f"None or {self.words}", lambda v: v is None or self.test(v), self.choices)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def int_from(low: int) -> Allowed:
    return Allowed(f"an int ≥ {low}", lambda v: _is_int(v) and v >= low)


def number_above(low: float) -> Allowed:
    return Allowed(f"a number > {low:g}", lambda v: _is_number(v) and v > low)


def number_from(low: float) -> Allowed:
    return Allowed(f"a number ≥ {low:g}", lambda v: _is_number(v) and v >= low)


def number_in(low: float, high: float, *, open_low: bool = False) -> Allowed:
    bracket = "(" if open_low else "["
    return Allowed(f"a number in {bracket}{low:g}, {high:g}]",
                   lambda v: _is_number(v) and (v > low if open_low else v >= low) and v <= high)


def one_of(choices) -> Allowed:
    choices = tuple(choices)
    return Allowed("one of " + ", ".join(map(repr, choices)), lambda v: isinstance(v, str) and v in choices, choices)


BOOL = Allowed("true or false", lambda v: isinstance(v, bool), (True, False))


def setting(default, help: str, allowed: Allowed | None = None):
    """A config field with its one-line meaning and allowed values (``allowed`` None: any value)."""
    return dataclasses.field(default=default, metadata={"help": help, "allowed": allowed})


class ConfigError(ValueError):
    """A config field holds a value it does not allow; ``config`` and ``field`` name it."""

    def __init__(self, message: str, config: str, field: str):
        super().__init__(message)
        self.config, self.field = config, field


class DictConfig:
    """What the config dataclasses (ModelConfig, TrainConfig, DataConfig) share: validation from the
    fields' ``setting`` metadata, then ``check()`` for rules between fields; to_dict / from_dict, where
    an unknown key is an error that lists the known ones."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            allowed = f.metadata.get("allowed")
            if allowed is not None:
                self.need(f.name, allowed.test(getattr(self, f.name)), allowed.words)
        self.check()

    def check(self) -> None:
        """Rules between fields (a subclass adds its own)."""

    def need(self, field: str, ok: bool, expected: str) -> None:
        if not ok:
            name = type(self).__name__
            raise ConfigError(f"{name}.{field} = {getattr(self, field)!r} is invalid: expected {expected}", name, field)

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
    vocab_size: int = setting(8192, "tokens in the vocabulary (the CLI takes it from the data)", int_from(1))
    d_model: int = setting(128, "width of the residual stream", int_from(1))
    n_layers: int = setting(2, "number of blocks", int_from(1))
    block: str = setting("rodimus", "the block: Rodimus (DDTS mixer + FFN), Rodimus+ (plus sliding-window "
                         "shared-key attention) or a Transformer++", one_of(BLOCKS))
    # Rodimus (DDTS) mixer
    mem_size: int = setting(64, "n: key dim of the DDTS state (n × m numbers per layer)", int_from(1))
    expand: float = setting(2.0, "m = align8(expand · d_model): value dim of the DDTS state", number_above(0))
    conv_size: int = setting(4, "kernel width of the short causal convolution", int_from(1))
    gate_rank: int | None = setting(None, "ℓ, rank of the low-rank value gate; None: max(d_model // 64, 16)",
                                    int_from(1).or_none())
    gate: str = setting("ddts", "the DDTS gate or an ablation: "
                        + "; ".join(f"{k}: {v}" for k, v in GATES.items()), one_of(GATES))
    short_conv: bool = setting(True, "a short causal convolution before the DDTS projections", BOOL)
    key_norm: bool = setting(True, "L2-normalise k before it enters the state", BOOL)
    chunk_size: int = setting(16, "chunk length of the reference chunkwise DDTS (16 is fastest on CPU)", int_from(1))
    # attention (rodimus_plus, transformer)
    n_heads: int | None = setting(None, "query heads; None: max(1, d_model // 128)", int_from(1).or_none())
    attn_layout: str | None = setting(None, "how heads share keys and values: mha (none), gqa (n_kv_heads groups), "
                                      "mqa (one K/V head), ska (one K head, a V head per query head); "
                                      "None: ska for rodimus_plus, mha for transformer", one_of(ATTN_LAYOUTS).or_none())
    n_kv_heads: int | None = setting(None, "key/value heads of attn_layout gqa", int_from(1).or_none())
    window: int | None = setting(None, "keys a query sees, itself included (sliding window); None: all",
                                 int_from(1).or_none())
    rope_base: float = setting(10000.0, "base of the rotary position frequencies", number_above(1))
    rope_dim: int | None = setting(None, "leading dims of each head that RoPE rotates (partial RoPE); None: all, 0: "
                                   "no RoPE", Allowed("an even int ≥ 0", lambda v: _is_int(v) and v >= 0 and v % 2 == 0).or_none())
    rope_interleaved: bool = setting(False, "RoPE pairs dims (2i, 2i+1) (GPT-J) instead of (i, i + dim/2) (GPT-NeoX)", BOOL)
    xpos_scale_base: float | None = setting(None, "the official XPos-style scale of queries and keys, centred on "
                                            "max_seq_len // 2 (needs max_seq_len); None: off", number_above(0).or_none())
    two_hop: bool = setting(True, "Rodimus+: attention reaches the residual stream only through the FFN", BOOL)
    ffn_expand: float | None = setting(None, "SwiGLU hidden width = align8(ffn_expand · d_model); "
                                       "None: 4/3 (rodimus_plus), 8/3 (transformer)", number_above(0).or_none())
    # model
    tie_embeddings: bool = setting(False, "the output head shares the input embedding's weights", BOOL)
    embed_scale: float = setting(1.0, "the embeddings are multiplied by this (official use_scale_embedding: √mem_size)",
                                 number_above(0))
    norm_eps: float = setting(1e-5, "ε of the RMSNorms", number_above(0))
    init_std: float = setting(0.02, "standard deviation of the initial weights", number_above(0))
    max_seq_len: int | None = setting(None, "a limit on positions; None: unlimited", int_from(1).or_none())
    backend: str = setting("auto", "auto: the Triton kernels on CUDA, else the PyTorch reference; reference; triton",
                           one_of(BACKENDS))

    def check(self) -> None:
        need = self.need
        if self.has_attention:
            need("n_heads", self.d_model % self.num_heads == 0,
                 f"a divisor of d_model = {self.d_model} (head_dim = d_model / n_heads)")
            need("n_heads", self.head_dim % 2 == 0, "a value giving an even head_dim (RoPE rotates pairs)")
            need("rope_dim", self.rope_dim is None or self.rope_dim <= self.head_dim, f"at most head_dim = {self.head_dim}")
            need("max_seq_len", self.xpos_scale_base is None or self.max_seq_len is not None,
                 "an int when xpos_scale_base is set (the XPos scale is centred on max_seq_len // 2)")
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
