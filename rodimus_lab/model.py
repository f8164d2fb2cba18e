"""The Rodimus*, and Transformer++ language models as nn.Modules.

Weights live here; the equations live in :mod:`rodimus_lab.ddts` and
:mod:`rodimus_lab.attention` (or their Triton twins, through one ``backend`` switch).
Parameter names follow the official checkpoints (``load_official`` only strips the
``model.`` prefix and the ``inner_mixer`` level).

    Rodimus layer      X ← X + RodimusMixer(RMSNorm(X))
    Rodimus+ layer     Y = X + RodimusMixer(RMSNorm(X))
                       Z = Y + FFN(RMSNorm(Y + SWSKA(RMSNorm(Y))))      (two-hop residual)
    Transformer++      Y = X + Attention(RMSNorm(X));  Z = Y + FFN(RMSNorm(Y))
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import attention as attn_ref
from . import ddts as ddts_ref
from . import generate as generation
from .config import ModelConfig

__all__ = ["RodimusLM", "LMOutput", "DecodeState", "RMSNorm", "RodimusMixer", "Attention", "SwiGLU", "Tap"]


def _up(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64): gates, norms and the stream need the range."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class Tap(nn.Identity):
    """A named point where a forward hook can read intermediate values.

    The model passes gates, DDTS inputs and attention weights through taps; nothing is
    stored unless a hook is registered (see ``rodimus_lab.viz.probe``). Attention weights
    are only computed while a hook listens, so taps cost nothing in training.
    """

    @property
    def active(self) -> bool:
        return bool(self._forward_hooks)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, backend: str = "reference"):
        super().__init__()
        self.eps = eps
        self.backend = backend
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        if _fuse_eagerly(self.backend, x):   # one kernel, normed straight into the dtype autocast would cast to
            return _glue().rms_norm(x, self.weight, self.eps, _autocast_dtype(x))
        xf = _up(x)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


class ShortConv(nn.Module):
    """Causal depthwise convolution over time (kernel 4), followed by SiLU."""

    def __init__(self, dim: int, size: int, backend: str = "reference"):
        super().__init__()
        self.size = size
        self.backend = backend
        self.conv1d = nn.Conv1d(dim, dim, size, groups=dim, padding=size - 1, bias=True)

    def forward(self, x, buffer=None):
        """x [B, T, m] → SiLU(conv) [B, T, m]; each output sees its input and the size − 1 before it.

        ``buffer`` [B, m, size − 1]: the inputs just before x, oldest first (zeros at the start of a
        sequence); it is overwritten IN PLACE with the last size − 1 inputs seen, ready for the next
        call. None: x starts the sequence.
        """
        if buffer is None and _use_triton(self.backend, x):   # conv + SiLU in one kernel, fwd and bwd
            return _glue().short_conv_silu(x, self.conv1d.weight[:, 0], self.conv1d.bias)
        history = x.transpose(1, 2)                                          # [B, m, T]
        before = self.size - 1
        if buffer is None:
            history = F.pad(history, (before, 0))
        else:
            history = torch.cat([buffer.to(history.dtype), history], dim=-1)
            buffer.copy_(history[..., history.shape[-1] - before:])
        y = F.conv1d(history, self.conv1d.weight, self.conv1d.bias, groups=history.shape[1])
        return F.silu(y.transpose(1, 2))


# ------------------------------------------------------------------------ backends

_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def _use_triton(backend: str, x: torch.Tensor) -> bool:
    """"auto" takes the kernels on CUDA when Triton is installed; "triton" always (on CPU the kernels
    run under TRITON_INTERPRET=1 or fall back to the reference themselves)."""
    if backend == "reference":
        return False
    return backend == "triton" or (x.is_cuda and _TRITON_INSTALLED)


def _fuse_eagerly(backend: str, x: torch.Tensor) -> bool:
    """The kernel for element-wise work that torch.compile fuses as well by itself (the pre-norm, with the
    residual add before it): on the kernel backend, outside compilation."""
    return _use_triton(backend, x) and not torch.compiler.is_compiling()


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the next matrix product reads x in: autocast's where it is on, else x's own."""
    on = torch.is_autocast_enabled(x.device.type)
    return torch.get_autocast_dtype(x.device.type) if on else x.dtype


def _use_sdpa(backend: str, x: torch.Tensor) -> bool:
    """PyTorch's fused attention (flash / memory-efficient) on CUDA unless the backend is "reference"."""
    return backend != "reference" and x.is_cuda


def _kernel(name: str):
    import rodimus_kernels   # on first use only: a CPU run never loads Triton

    return getattr(rodimus_kernels, name)


def _ddts_kernel_fits(config) -> bool:
    """The DDTS kernels take n up to rodimus_kernels.ddts.MAX_STATE (their tiles' shared memory); above it
    "auto" takes the reference, and "triton" lets the kernel refuse with its error."""
    from rodimus_kernels.ddts import MAX_STATE

    return config.backend == "triton" or config.mem_size <= MAX_STATE


def _glue():
    """The fused element-wise glue of the mixer (rodimus_kernels.glue; its twins are this file's modules)."""
    from rodimus_kernels import glue

    return glue


# --------------------------------------------------------------------- the mixer

class RodimusMixer(nn.Module):
    """One Rodimus flow: short conv, DDTS, gated RMSNorm (docs/equations.md §2).

    [x', z] = x W_fc;  x̃ = SiLU(conv(x'));  q, k = x̃ W_q, x̃ W_k;  g, τ from x̃ W_g|τ;
    v = sigmoid((x' W_1) W_2 + b) ⊙ x';  o = DDTS(q, α̂ ⊙ k/‖k‖, v, log α) + d ⊙ x̃;
    y = RMSNorm(o ⊙ SiLU(z)) W_out.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        d, m, n = c.d_model, c.d_inner, c.mem_size
        self.fc = nn.Linear(d, 2 * m, bias=False)
        self.short_conv = ShortConv(m, c.conv_size, c.backend) if c.short_conv else None
        self.in_proj = nn.Linear(m, 2 * n, bias=False)
        self.ch_gate_proj = nn.Sequential(nn.Linear(m, c.low_rank, bias=False), nn.Linear(c.low_rank, m, bias=True))
        gate_logits = ddts_ref.gate_logits_width(c.gate, n)
        if gate_logits:
            self.mem_gate_proj = nn.Linear(m, gate_logits, bias=True)
        self.residual_weight = nn.Parameter(torch.ones(m))
        self.act_norm = RMSNorm(m, eps=c.norm_eps)
        self.out_proj = nn.Linear(m, d, bias=False)
        self.gate_tap = Tap()   # sees dict(g, tau, log_alpha, alpha_hat)
        self.ddts_tap = Tap()   # sees dict(q, k, v, log_alpha): the DDTS inputs

    def gate_logits(self, xc):
        """x̃ W_g|τ + b in (at least) float32: the gates' exponents need the range (autocast would
        round a linear layer's output to bf16, so it is switched off here). [B, T, 0] for the fixed
        gates, which read none."""
        if not hasattr(self, "mem_gate_proj"):
            return _up(xc).new_zeros(*xc.shape[:-1], 0)
        if _use_triton(self.config.backend, xc):   # bf16 x̃ on tensor cores, float32 logits out
            return _glue().gate_linear(xc, self.mem_gate_proj.weight, self.mem_gate_proj.bias)
        with torch.autocast(xc.device.type, enabled=False):
            return F.linear(_up(xc), _up(self.mem_gate_proj.weight), _up(self.mem_gate_proj.bias))

    def _value(self, x_):
        """v = β̂ ⊙ x' with the low-rank value gate β̂ (the value is the pre-conv branch)."""
        if _use_triton(self.config.backend, x_):   # the backward rebuilds the logits from the low-rank product
            down, up = self.ch_gate_proj
            return _glue().low_rank_value_gate(down(x_), up.weight, up.bias, x_)
        return torch.sigmoid(self.ch_gate_proj(x_)) * x_

    def forward(self, x, state: dict | None = None):
        """x: RMS-normed [B, T, d] → [B, T, d].

        ``state`` (from :meth:`init_state`): x continues the sequence that left this state, and the
        state is updated IN PLACE to the one after x (decoding: T = 1; prefill: the prompt). None: x is
        a whole sequence from the zero state and nothing is kept (training).
        """
        x_, z = self.fc(x).chunk(2, dim=-1)
        if self.short_conv is not None:
            xc = self.short_conv(x_, None if state is None else state["conv"])
        else:
            xc = F.silu(x_)
        o = self._ddts(xc, self._value(x_), None if state is None else state["ddts"])
        return self.out_proj(self._gated_norm(o, xc, z))

    def _gated_norm(self, o, xc, z):
        """RMSNorm((o + d ⊙ x̃) ⊙ SiLU(z)): the skip term, the output gate and the norm, in z's dtype."""
        if _use_triton(self.config.backend, z):   # one kernel, fwd and bwd
            return _glue().gated_rmsnorm(o, xc, z, self.residual_weight, self.act_norm.weight, self.act_norm.eps)
        o = _up(o) + self.residual_weight * _up(xc)
        return self.act_norm(o * F.silu(_up(z))).to(z.dtype)

    def _ddts(self, xc, v, S):
        """DDTS over the tokens of xc [B, T, m] with values v, one head; S [B, 1, n, m] (or None) is
        the state before the first token and is overwritten with the state after the last."""
        c = self.config
        q, k = self.in_proj(xc).chunk(2, dim=-1)
        logits = self.gate_logits(xc)
        decode = S is not None and xc.shape[1] == 1   # [B, 1, ·] read as one token of one head, [B, H=1, ·]
        if c.gate == "ddts" and c.key_norm and not (self.gate_tap.active or self.ddts_tap.active) \
                and _use_triton(c.backend, xc) and _ddts_kernel_fits(c):
            # The kernels compute the gates and the key normalisation themselves.
            g_logits, tau_logits = logits.chunk(2, dim=-1)
            if decode:   # the one-token kernel updates S in place
                return _kernel("ddts_step")(q, k, v, g_logits, tau_logits, S)[0]
            o, final = _kernel("ddts")(*(t.unsqueeze(2) for t in (q, k, v, g_logits, tau_logits)),
                                       initial_state=S, output_final_state=S is not None)
        else:
            gate = ddts_ref.gates(c.gate, logits, c.mem_size)
            self.gate_tap(gate._asdict())
            k = ddts_ref.effective_key(k, gate.alpha_hat, normalize=c.key_norm)
            if decode:   # log α ≤ 0 by construction: skip the check, a host sync that CUDA graphs forbid
                o, final = ddts_ref.ddts_step(q, k, v, gate.log_alpha, S, check_inputs=False)
                S.copy_(final)
                return o
            q, k, v, log_alpha = (t.unsqueeze(2) for t in (q, k, v, gate.log_alpha))   # one head: [B, T, 1, ·]
            self.ddts_tap(dict(q=q, k=k, v=v, log_alpha=log_alpha))
            o, final = ddts_ref.ddts_chunkwise(q, k, v, log_alpha, chunk_size=c.chunk_size, initial_state=S,
                                               output_final_state=S is not None, check_inputs=False)
        if S is not None:
            S.copy_(final)   # in place: the state's storage stays (CUDA graphs replay on it)
        return o.squeeze(2)

    def init_state(self, batch_size: int, device, dtype=torch.float32) -> dict:
        """The zero state: DDTS [B, 1, n, m] in float32 (float64 for a float64 model) and the short
        conv's input buffer [B, m, conv_size − 1] in ``dtype``."""
        c = self.config
        state = {"ddts": torch.zeros(batch_size, 1, c.mem_size, c.d_inner, device=device,
                                     dtype=torch.promote_types(dtype, torch.float32))}
        if self.short_conv is not None:
            state["conv"] = torch.zeros(batch_size, c.d_inner, c.conv_size - 1, device=device, dtype=dtype)
        return state


# ---------------------------------------------------------------------- attention

class Attention(nn.Module):
    """Multi-head softmax attention with RoPE: MHA/GQA/MQA/SKA, optional sliding window."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        d, dh = c.d_model, c.head_dim
        self.q_proj = nn.Linear(d, c.num_heads * dh, bias=False)
        self.k_proj = nn.Linear(d, c.num_key_heads * dh, bias=False)
        self.v_proj = nn.Linear(d, c.num_value_heads * dh, bias=False)
        self.out_proj = nn.Linear(c.num_heads * dh, d, bias=False)
        self.weights_tap = Tap()   # sees the attention weights [B, H, T, T] while a hook listens
        self._tables = {}          # RoPE cos/sin per sequence length (the kernel backend's)

    def _qkv(self, x, offset: int):
        c = self.config
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, c.num_heads, c.head_dim)
        k = self.k_proj(x).view(B, T, c.num_key_heads, c.head_dim)
        v = self.v_proj(x).view(B, T, c.num_value_heads, c.head_dim)
        return self._rope(q, offset), self._rope(k, offset), v

    def _rope(self, x, offset: int):
        """RoPE in the variant the config names (partial, interleaved, the official XPos scale)."""
        c = self.config
        plain = c.rope_dim in (None, c.head_dim) and not c.rope_interleaved and c.xpos_scale_base is None
        # A whole sequence: one kernel, fwd and bwd, compiled or not (left to Inductor, the reference's float64
        # cos/sin were fused into the rotation and recomputed for every head: 5.4 ms of a 66 ms H200 step).
        if plain and offset == 0 and _use_triton(c.backend, x):
            return _glue().rope(x, *self._rope_tables(x.shape[1], x.device))
        return attn_ref.rope(x, offset=offset, base=c.rope_base, dims=c.rope_dim, interleaved=c.rope_interleaved,
                             xpos_scale_base=c.xpos_scale_base,
                             xpos_center=c.max_seq_len // 2 if c.xpos_scale_base is not None else 0)

    def _rope_tables(self, T: int, device):
        """cos, sin [T, head_dim / 2] of positions 0 … T − 1 for the RoPE kernel: made once per length, or in
        the graph under torch.compile (a cache filled while tracing is guarded on, and would compile the model
        a second time; the [T, head_dim / 2] tables cost microseconds)."""
        key = (T, str(device))
        if key in self._tables:
            return self._tables[key]
        half = self.config.head_dim // 2
        cos, sin = attn_ref.rope_cos_sin(torch.arange(T, device=device), self.config.head_dim, base=self.config.rope_base)
        tables = cos[:, :half].contiguous(), sin[:, :half].contiguous()
        if not torch.compiler.is_compiling():
            self._tables[key] = tables
        return tables

    def forward(self, x, state: dict | None = None, position: int = 0):
        """x: RMS-normed [B, T, d] → [B, T, d].

        ``state`` (from :meth:`init_state`): the cache of the ``position`` tokens before x; x's keys and
        values are added to it IN PLACE (ring slots with a window; without one the growing cache is
        replaced by the longer tensor). None: x is a whole sequence from position 0 and nothing is kept.
        The position is a Python int: RoPE offsets and ring slots are fixed when a CUDA graph is captured.
        """
        B, T, _ = x.shape
        q, k, v = self._qkv(x, position)
        if state is None:
            o = self._attend(q, k, v)
        elif T == 1:
            o = self._decode(q, k, v, state, position)
        else:
            o = self._extend(q, k, v, state, position)
        return self.out_proj(o.reshape(B, T, -1))

    def _attend(self, q, k, v):
        """Causal (windowed) attention of a sequence on its own keys: SW-SKA's kernel where it applies."""
        c = self.config
        if self.weights_tap.active:
            o, weights = attn_ref.attention(q, k, v, window=c.window, return_weights=True)
            self.weights_tap(weights)
            return o
        if c.layout == "ska" and _use_triton(c.backend, q):
            return _kernel("sw_ska")(q, k, v, window=c.window if c.window is not None else q.shape[1])
        if _use_sdpa(c.backend, q):
            return self._sdpa(q, k, v)
        return attn_ref.attention(q, k, v, window=c.window)

    def _sdpa(self, q, k, v):
        """attn_ref.attention through PyTorch's fused kernels: key/value heads tiled as the reference
        pairs them (query head j reads head j mod Hk), a sliding window as a boolean mask."""
        T, H = q.shape[1], q.shape[2]
        k, v = (t if t.shape[2] == H else t.repeat(1, 1, H // t.shape[2], 1) for t in (k, v))
        window = self.config.window
        mask = None if window is None or window >= T else attn_ref.attention_mask(T, T, window=window, device=q.device)
        o = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), attn_mask=mask,
                                           is_causal=mask is None)
        return o.transpose(1, 2)

    def _decode(self, q, k, v, state: dict, position: int):
        """One token: its key and value into the cache, then attention over every valid slot (their
        order does not matter: every cached key is within the window): the one-token kernel on SKA."""
        c = self.config
        if c.window is None:
            state["k"] = torch.cat([state["k"], k.to(state["k"].dtype)], dim=1)
            state["v"] = torch.cat([state["v"], v.to(state["v"].dtype)], dim=1)
            seen = state["k"].shape[1]
        else:
            slot = position % c.window
            state["k"][:, slot] = k[:, 0]
            state["v"][:, slot] = v[:, 0]
            seen = min(position + 1, c.window)
        if c.layout == "ska" and _use_triton(c.backend, q):
            return _kernel("sw_ska_decode")(q, state["k"], state["v"], length=seen)
        return attn_ref.attention(q, state["k"][:, :seen], state["v"][:, :seen], causal=False)

    def _extend(self, q, k, v, state: dict, position: int):
        """T > 1 tokens after ``position`` cached ones (a prompt, or the next piece of one): attention
        over the cached keys still in reach and the new ones, then the new keys into the cache."""
        c = self.config
        T = q.shape[1]
        if c.window is None:
            keys = torch.cat([state["k"], k.to(state["k"].dtype)], dim=1)
            values = torch.cat([state["v"], v.to(state["v"].dtype)], dim=1)
            state["k"], state["v"] = keys, values
            return self._attend(q, k, v) if position == 0 else attn_ref.attention(q, keys.to(k.dtype), values.to(v.dtype))
        W = c.window
        reach = min(position, W - 1)            # cached keys the first new query still sees
        if reach:
            cached = torch.arange(position - reach, position, device=q.device) % W   # oldest first
            keys = torch.cat([state["k"][:, cached].to(k.dtype), k], dim=1)
            values = torch.cat([state["v"][:, cached].to(v.dtype), v], dim=1)
            o = attn_ref.attention(q, keys, values, window=W)
        else:
            o = self._attend(q, k, v)
        kept = min(T, W)                        # the ring keeps the last W positions
        slots = torch.arange(position + T - kept, position + T, device=q.device) % W
        state["k"][:, slots] = k[:, T - kept:].to(state["k"].dtype)
        state["v"][:, slots] = v[:, T - kept:].to(state["v"].dtype)
        return o

    def init_state(self, batch_size: int, device, dtype=torch.float32) -> dict:
        """A ring buffer of the last ``window`` keys and values (a growing cache if no window)."""
        c = self.config
        slots = c.window if c.window is not None else 0
        return {
            "k": torch.zeros(batch_size, slots, c.num_key_heads, c.head_dim, device=device, dtype=dtype),
            "v": torch.zeros(batch_size, slots, c.num_value_heads, c.head_dim, device=device, dtype=dtype),
        }


class SwiGLU(nn.Module):
    """[u, g] = x W_fc;  y = (SiLU(g) ⊙ u) W_out."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.backend = config.backend
        self.fc = nn.Linear(config.d_model, 2 * config.ffn_dim, bias=False)
        self.out_proj = nn.Linear(config.ffn_dim, config.d_model, bias=False)

    def forward(self, x):
        u, g = self.fc(x).chunk(2, dim=-1)
        if _use_triton(self.backend, g):   # the same product; eagerly its backward recomputes SiLU(g), not keeping it
            return self.out_proj(_glue().swiglu(g, u))
        return self.out_proj(F.silu(g) * u)


# ------------------------------------------------------------------------- layers

class Layer(nn.Module):
    """One layer of any block type; the residual wiring is spelled out in forward."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        if c.has_mixer:
            self.mixer_norm = RMSNorm(c.d_model, c.norm_eps, c.backend)
            self.mixer = RodimusMixer(c)
        if c.has_attention:
            self.attn_norm = RMSNorm(c.d_model, c.norm_eps, c.backend)
            self.attn = Attention(c)
            self.ffn_norm = RMSNorm(c.d_model, c.norm_eps, c.backend)
            self.ffn = SwiGLU(c)

    def forward(self, x, state: dict | None = None, position: int = 0):
        """The residual wiring. ``state``: this layer's part of a DecodeState, updated in place;
        ``position``: of x's first token (see RodimusLM.forward)."""
        c = self.config
        if c.has_mixer:
            x = x + self.mixer(self.mixer_norm(x), None if state is None else state["mixer"])
        if not c.has_attention:
            return x
        a = self.attn(self.attn_norm(x), None if state is None else state["attn"], position)
        if c.block == "rodimus_plus" and c.two_hop:
            return x + self.ffn(self.ffn_norm(x + a))   # attention reaches the stream via the FFN
        x = x + a
        return x + self.ffn(self.ffn_norm(x))


# -------------------------------------------------------------------------- model

@dataclass
class LMOutput:
    logits: torch.Tensor                 # [B, T, V]
    loss: torch.Tensor | None = None     # mean cross-entropy over labels ≠ −100
    state: DecodeState | None = None     # the state given to forward, now after these tokens


@dataclass
class DecodeState:
    """Everything decoding carries from token to token: per-layer caches and the position."""
    layers: list = field(default_factory=list)
    position: int = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers for part in layer.values()
                   for t in part.values())

    def clone(self) -> DecodeState:
        """An independent copy (every tensor cloned)."""
        layers = [{part: {name: t.clone() for name, t in tensors.items()} for part, tensors in layer.items()}
                  for layer in self.layers]
        return DecodeState(layers=layers, position=self.position)


class RodimusLM(nn.Module):
    """Embeddings → layers → final RMSNorm → LM head (optionally tied)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a rodimus_lab.ModelConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.n_layers))
        self.norm_f = RMSNorm(config.d_model, config.norm_eps, config.backend)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """The official initialisation (docs/equations.md §2)."""
        c = self.config
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=c.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=c.init_std)
        for module in self.modules():
            if isinstance(module, RodimusMixer):
                _init_mixer(module)
        for name, p in self.named_parameters():
            if name.endswith("out_proj.weight"):
                p /= math.sqrt(c.residuals_per_layer * c.n_layers)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                state: DecodeState | None = None, *, check_inputs: bool = True) -> LMOutput:
        """Logits [B, T, V] of ``input_ids`` [B, T] (T ≥ 1), and with ``labels`` [B, T] the mean
        cross-entropy over labels ≠ −100.

        ``state`` (from :meth:`init_state`, or left by an earlier call): the ids continue those
        sequences at ``state.position``; the state is updated in place to include them and comes back
        as ``.state``. Prefill is this forward over a prompt, a decoding step is it at T = 1 (:meth:`step`).
        ``check_inputs=False`` skips the check that the ids are inside the vocabulary, which reads them
        on the host (a device sync, which CUDA-graph capture forbids); types and shapes are always checked.
        """
        self.check_ids(input_ids, "input_ids", values=check_inputs)
        position = 0 if state is None else self._check_state(state, input_ids.shape[0])
        T = input_ids.shape[1]
        limit = self.config.max_seq_len
        if limit is not None and position + T > limit:
            raise ValueError(f"sequence length {position + T} exceeds ModelConfig.max_seq_len = {limit}")
        x = _up(self.embeddings(input_ids)) * self.config.embed_scale   # the stream stays in (at least) float32
        for i, layer in enumerate(self.layers):
            x = layer(x, None if state is None else state.layers[i], position)
        if state is not None:
            state.position += T
        logits = self.lm_head(self.norm_f(x))
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
            loss = F.cross_entropy(_up(logits).flatten(0, 1), labels.flatten(), ignore_index=-100)
        return LMOutput(logits=logits, loss=loss, state=state)

    def check_ids(self, ids, name: str = "input_ids", *, values: bool = True) -> None:
        """Refuse what the model cannot read: ``input_ids`` must be an integer tensor [B, T] with B, T ≥ 1
        (``token``: [B]); ``values`` also checks that every id is in [0, vocab_size) (a device sync)."""
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an integer (Long) tensor of token ids, got "
                            f"{type(ids).__name__ if not isinstance(ids, torch.Tensor) else ids.dtype}")
        dims, expected = (2, "[B, T]") if name == "input_ids" else (1, "[B]")
        if ids.dim() != dims or ids.numel() == 0:
            raise ValueError(f"{name} must be {expected} with every dim ≥ 1 (a batch of token ids), "
                             f"got shape {tuple(ids.shape)}")
        if values and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(f"{name} holds ids outside [0, vocab_size={self.config.vocab_size})")

    def _check_state(self, state: DecodeState, batch_size: int) -> int:
        """The state's position, once it is known to fit this model and batch."""
        if not isinstance(state, DecodeState) or len(state.layers) != len(self.layers):
            raise ValueError(f"state must be this model's DecodeState ({len(self.layers)} layers): use model.init_state()")
        held = next(t.shape[0] for part in state.layers[0].values() for t in part.values())
        if held != batch_size:
            raise ValueError(f"state holds {held} sequences, input_ids {batch_size}: use model.init_state({batch_size})")
        return state.position

    # -- incremental decoding
    def init_state(self, batch_size: int) -> DecodeState:
        """The state before the first token of ``batch_size`` sequences (see :meth:`forward`)."""
        p = self.embeddings.weight
        layers = []
        for layer in self.layers:
            s = {}
            if self.config.has_mixer:
                s["mixer"] = layer.mixer.init_state(batch_size, p.device, p.dtype)
            if self.config.has_attention:
                s["attn"] = layer.attn.init_state(batch_size, p.device, p.dtype)
            layers.append(s)
        return DecodeState(layers=layers)

    def step(self, token: torch.Tensor, state: DecodeState):
        """Feed one token per sequence (token [B]): :meth:`forward` at T = 1. Returns (logits [B, V], state)."""
        self.check_ids(token, "token")
        return self(token[:, None], state=state, check_inputs=False).logits[:, 0], state

    def generate(self, input_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, callback=None):
        """Sample ``max_new_tokens`` tokens after each prompt from the recurrent state (or KV cache).

        See :func:`rodimus_lab.generate.generate` for the arguments, batches of different prompt
        lengths and the streaming callback.
        """
        return generation.generate(self, input_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, seed=seed, callback=callback)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embeddings.weight.numel() if exclude_embeddings else n


def _xavier(weight, gain=2 ** -2.5):
    nn.init.xavier_uniform_(weight, gain=gain)


@torch.no_grad()
def _init_mixer(mixer: RodimusMixer):
    """docs/equations.md §2: Xavier(gain 2^−2.5) for the DDTS projections, gate biases from ranges."""
    _xavier(mixer.in_proj.weight)
    _xavier(mixer.ch_gate_proj[0].weight)
    _xavier(mixer.ch_gate_proj[1].weight)
    nn.init.zeros_(mixer.ch_gate_proj[1].bias)
    mixer.residual_weight.fill_(1.0)
    if not hasattr(mixer, "mem_gate_proj"):
        return
    _xavier(mixer.mem_gate_proj.weight)
    out = mixer.mem_gate_proj.out_features
    n_g = out if mixer.config.gate == "no_tau" else out // 2
    # b_g = softplus⁻¹(g₀), g₀ log-uniform in [1e−3, 0.1]; b_τ = logit(U(1/16, 0.9))
    g0 = torch.exp(torch.empty(n_g).uniform_(math.log(1e-3), math.log(0.1))).clamp(min=1e-4)
    bias = [g0 + torch.log(-torch.expm1(-g0))]
    if out > n_g:
        bias.append(torch.logit(torch.empty(out - n_g).uniform_(1 / 16, 0.9)))
    mixer.mem_gate_proj.bias.copy_(torch.cat(bias))
