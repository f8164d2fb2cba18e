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
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = _up(x)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


class ShortConv(nn.Module):
    """Causal depthwise convolution over time (kernel 4), followed by SiLU."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.size = size
        self.conv1d = nn.Conv1d(dim, dim, size, groups=dim, padding=size - 1, bias=True)

    def forward(self, x):  # [B, T, m]
        T = x.shape[1]
        return F.silu(self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2))

    def step(self, x, buffer):
        """x [B, m], buffer [B, m, size−1] holding the previous inputs → (y [B, m], new buffer)."""
        window = torch.cat([buffer, x.unsqueeze(-1)], dim=-1)
        y = (window * self.conv1d.weight[:, 0, :]).sum(-1) + self.conv1d.bias
        return F.silu(y), window[..., 1:]


# ------------------------------------------------------------------------ backends

def _use_triton(backend: str, x: torch.Tensor) -> bool:
    """"auto" takes the kernels on CUDA when Triton is installed; "triton" always (on CPU the kernels
    run under TRITON_INTERPRET=1 or fall back to the reference themselves)."""
    if backend == "reference":
        return False
    return backend == "triton" or (x.is_cuda and importlib.util.find_spec("triton") is not None)


def _kernel(name: str):
    import rodimus_kernels   # on first use only: a CPU run never loads Triton

    return getattr(rodimus_kernels, name)


# --------------------------------------------------------------------- the mixer

class RodimusMixer(nn.Module):
    """One Rodimus flow: short conv, DDTS, gated RMSNorm (notes §2).

    [x', z] = x W_fc;  x̃ = SiLU(conv(x'));  q, k = x̃ W_q, x̃ W_k;  g, τ from x̃ W_g|τ;
    v = sigmoid((x' W_1) W_2 + b) ⊙ x';  o = DDTS(q, α̂ ⊙ k/‖k‖, v, log α) + d ⊙ x̃;
    y = RMSNorm(o ⊙ SiLU(z)) W_out.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        d, m, n = c.d_model, c.d_inner, c.mem_size
        self.fc = nn.Linear(d, 2 * m, bias=False)
        self.short_conv = ShortConv(m, c.conv_size) if c.short_conv else None
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
        with torch.autocast(xc.device.type, enabled=False):
            return F.linear(_up(xc), _up(self.mem_gate_proj.weight), _up(self.mem_gate_proj.bias))

    def _features(self, x_, xc):
        """Everything DDTS needs from x' (pre-conv) and x̃ (post-conv), per token."""
        c = self.config
        q, k = self.in_proj(xc).chunk(2, dim=-1)
        gate = ddts_ref.gates(c.gate, self.gate_logits(xc), c.mem_size)
        self.gate_tap(gate._asdict())
        return q, ddts_ref.effective_key(k, gate.alpha_hat, normalize=c.key_norm), self._value(x_), gate.log_alpha

    def _kernel_inputs(self, x_, xc):
        """(q, k, v, g_logits, tau_logits) for the fused kernels: k raw, logits in fp32."""
        q, k = self.in_proj(xc).chunk(2, dim=-1)
        return (q, k, self._value(x_), *self.gate_logits(xc).chunk(2, dim=-1))

    def _value(self, x_):
        """v = β̂ ⊙ x' with the low-rank value gate β̂ (the value is the pre-conv branch)."""
        return torch.sigmoid(self.ch_gate_proj(x_)) * x_

    def forward(self, x):  # x: RMS-normed [B, T, d]
        c = self.config
        x_, z = self.fc(x).chunk(2, dim=-1)
        xc = self.short_conv(x_) if self.short_conv is not None else F.silu(x_)
        fusable = c.gate == "ddts" and c.key_norm and not (self.gate_tap.active or self.ddts_tap.active)
        if fusable and _use_triton(c.backend, x):
            # The kernel computes the gates and the key normalisation itself.
            o, _ = _kernel("ddts")(*(t.unsqueeze(2) for t in self._kernel_inputs(x_, xc)))
            return self._output(o.squeeze(2), xc, z)
        q, k, v, log_alpha = self._features(x_, xc)
        q, k, v, log_alpha = (t.unsqueeze(2) for t in (q, k, v, log_alpha))   # one head: [B, T, 1, ·]
        self.ddts_tap(dict(q=q, k=k, v=v, log_alpha=log_alpha))
        o, _ = ddts_ref.ddts_chunkwise(q, k, v, log_alpha, chunk_size=c.chunk_size)
        return self._output(o.squeeze(2), xc, z)

    def _output(self, o, xc, z):
        o = _up(o) + self.residual_weight * _up(xc)
        return self.out_proj(self.act_norm(o * F.silu(_up(z))).to(z.dtype))

    # -- decoding
    def init_state(self, batch_size: int, device, dtype=torch.float32) -> dict:
        c = self.config
        state = {"ddts": torch.zeros(batch_size, 1, c.mem_size, c.d_inner, device=device, dtype=torch.float32)}
        if self.short_conv is not None:
            state["conv"] = torch.zeros(batch_size, c.d_inner, c.conv_size - 1, device=device, dtype=dtype)
        return state

    def step(self, x, state: dict):  # x: RMS-normed [B, d]
        x_, z = self.fc(x).chunk(2, dim=-1)
        if self.short_conv is not None:
            xc, state["conv"] = self.short_conv.step(x_, state["conv"])
        else:
            xc = F.silu(x_)
        c = self.config
        if c.gate == "ddts" and c.key_norm and not self.gate_tap.active and _use_triton(c.backend, x):
            # Fused gates + key norm; the fp32 state is updated in place.
            o, _ = _kernel("ddts_step")(*(t.unsqueeze(1) for t in self._kernel_inputs(x_, xc)), state["ddts"])
            return self._output(o.squeeze(1), xc, z)
        q, k, v, log_alpha = (t.unsqueeze(1) for t in self._features(x_, xc))   # [B, 1, ·]
        o, state["ddts"] = ddts_ref.ddts_step(q, k, v, log_alpha, state["ddts"])
        return self._output(o.squeeze(1), xc, z)


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

    def _qkv(self, x, offset: int):
        c = self.config
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, c.num_heads, c.head_dim)
        k = self.k_proj(x).view(B, T, c.num_key_heads, c.head_dim)
        v = self.v_proj(x).view(B, T, c.num_value_heads, c.head_dim)
        return attn_ref.rope(q, offset=offset, base=c.rope_base), attn_ref.rope(k, offset=offset, base=c.rope_base), v

    def forward(self, x):
        c = self.config
        q, k, v = self._qkv(x, 0)
        if self.weights_tap.active:
            o, weights = attn_ref.attention(q, k, v, window=c.window, return_weights=True)
            self.weights_tap(weights)
        elif c.layout == "ska" and _use_triton(c.backend, x):
            o = _kernel("sw_ska")(q, k, v, window=c.window if c.window is not None else x.shape[1])
        else:
            o = attn_ref.attention(q, k, v, window=c.window)
        return self.out_proj(o.reshape(*x.shape[:2], -1))

    def init_state(self, batch_size: int, device, dtype=torch.float32) -> dict:
        """A ring buffer of the last ``window`` keys and values (a growing cache if no window)."""
        c = self.config
        slots = c.window if c.window is not None else 0
        return {
            "k": torch.zeros(batch_size, slots, c.num_key_heads, c.head_dim, device=device, dtype=dtype),
            "v": torch.zeros(batch_size, slots, c.num_value_heads, c.head_dim, device=device, dtype=dtype),
        }

    def step(self, x, state: dict, position: int):  # x: [B, d]
        c = self.config
        q, k, v = self._qkv(x.unsqueeze(1), position)
        if c.window is None:
            state["k"] = torch.cat([state["k"], k.to(state["k"].dtype)], dim=1)
            state["v"] = torch.cat([state["v"], v.to(state["v"].dtype)], dim=1)
            seen = state["k"].shape[1]
        else:  # every cached key is within the window, so slot order does not matter
            slot = position % c.window
            state["k"][:, slot] = k[:, 0]
            state["v"][:, slot] = v[:, 0]
            seen = min(position + 1, c.window)
        if c.layout == "ska" and _use_triton(c.backend, x):
            o = _kernel("sw_ska_decode")(q, state["k"], state["v"], length=seen)
        else:
            o = attn_ref.attention(q, state["k"][:, :seen], state["v"][:, :seen], causal=False)
        return self.out_proj(o.reshape(x.shape[0], -1))


class SwiGLU(nn.Module):
    """[u, g] = x W_fc;  y = (SiLU(g) ⊙ u) W_out."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 2 * config.ffn_dim, bias=False)
        self.out_proj = nn.Linear(config.ffn_dim, config.d_model, bias=False)

    def forward(self, x):
        u, g = self.fc(x).chunk(2, dim=-1)
        return self.out_proj(F.silu(g) * u)


# ------------------------------------------------------------------------- layers

class Layer(nn.Module):
    """One layer of any block type; the residual wiring is spelled out in forward."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        if c.has_mixer:
            self.mixer_norm = RMSNorm(c.d_model, c.norm_eps)
            self.mixer = RodimusMixer(c)
        if c.has_attention:
            self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
            self.attn = Attention(c)
            self.ffn_norm = RMSNorm(c.d_model, c.norm_eps)
            self.ffn = SwiGLU(c)

    def forward(self, x):
        return self._run(x, self.mixer if self.config.has_mixer else None,
                         self.attn if self.config.has_attention else None)

    def _run(self, x, mixer, attn):
        """The residual wiring; ``mixer`` / ``attn`` are callables on normed inputs."""
        c = self.config
        if mixer is not None:
            x = x + mixer(self.mixer_norm(x))
        if attn is None:
            return x
        a = attn(self.attn_norm(x))
        if c.block == "rodimus_plus" and c.two_hop:
            return x + self.ffn(self.ffn_norm(x + a))   # attention reaches the stream via the FFN
        x = x + a
        return x + self.ffn(self.ffn_norm(x))

    def step(self, x, state: dict, position: int):
        mixer = (lambda h: self.mixer.step(h, state["mixer"])) if self.config.has_mixer else None
        attn = (lambda h: self.attn.step(h, state["attn"], position)) if self.config.has_attention else None
        return self._run(x, mixer, attn)


# -------------------------------------------------------------------------- model

@dataclass
class LMOutput:
    logits: torch.Tensor                 # [B, T, V]
    loss: torch.Tensor | None = None     # mean cross-entropy over labels ≠ −100


@dataclass
class DecodeState:
    """Everything decoding carries from token to token: per-layer caches and the position."""
    layers: list = field(default_factory=list)
    position: int = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers for part in layer.values()
                   for t in part.values())


class RodimusLM(nn.Module):
    """Embeddings → layers → final RMSNorm → LM head (optionally tied)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a rodimus_lab.ModelConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.n_layers))
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """The official initialisation (notes §2)."""
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

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> LMOutput:
        self._check_ids(input_ids, "input_ids")
        x = _up(self.embeddings(input_ids))   # the residual stream stays in (at least) float32
        for layer in self.layers:
            x = layer(x)
        logits = self.lm_head(self.norm_f(x))
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
            loss = F.cross_entropy(_up(logits).flatten(0, 1), labels.flatten(), ignore_index=-100)
        return LMOutput(logits=logits, loss=loss)

    def _check_ids(self, ids, name):
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an integer (Long) tensor of token ids, got "
                            f"{type(ids).__name__ if not isinstance(ids, torch.Tensor) else ids.dtype}")
        if ids.dim() != (2 if name == "input_ids" else 1):
            expected = "[B, T]" if name == "input_ids" else "[B]"
            raise ValueError(f"{name} must be {expected}, got shape {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(f"{name} holds ids outside [0, vocab_size={self.config.vocab_size})")
        if name == "input_ids" and self.config.max_seq_len is not None and ids.shape[1] > self.config.max_seq_len:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds ModelConfig.max_seq_len = {self.config.max_seq_len}")

    # -- incremental decoding
    def init_state(self, batch_size: int) -> DecodeState:
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
        """Feed one token per sequence (token [B]); returns (logits [B, V], state)."""
        self._check_ids(token, "token")
        if len(state.layers) != len(self.layers):
            raise ValueError(f"state has {len(state.layers)} layers, the model {len(self.layers)}: use model.init_state()")
        x = _up(self.embeddings(token))
        for layer, s in zip(self.layers, state.layers):
            x = layer.step(x, s, state.position)
        state.position += 1
        return self.lm_head(self.norm_f(x)), state

    def generate(self, input_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, callback=None):
        """Sample ``max_new_tokens`` tokens after each prompt from the recurrent state (or KV cache).

        See :func:`rodimus_lab.generate.generate` for the arguments, batches of different prompt
        lengths and the streaming callback.
        """
        from .generate import generate   # generate.py builds on this module

        return generate(self, input_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, callback=callback)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embeddings.weight.numel() if exclude_embeddings else n


def _xavier(weight, gain=2 ** -2.5):
    nn.init.xavier_uniform_(weight, gain=gain)


@torch.no_grad()
def _init_mixer(mixer: RodimusMixer):
    """Notes §2: Xavier(gain 2^−2.5) for the DDTS projections, gate biases from ranges."""
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
