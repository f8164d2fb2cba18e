"""Exercises on the Rodimus blocks: the short conv's decode step, the two-hop residual,
how much memory decoding needs, and the whole Rodimus mixer.

Answer key: :class:`rodimus_lab.model.ShortConv`, :meth:`rodimus_lab.model.Layer.forward`,
:func:`rodimus_lab.memory.cache_bytes`, :class:`rodimus_lab.model.RodimusMixer`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..memory import cache_bytes
from ..model import Layer, RodimusMixer, ShortConv
from .harness import Bug, Case, Exercise, randint, randn

# ------------------------------------------------------------------- short_conv_step


def short_conv_reference(x, buffer, weight, bias):
    """ShortConv's forward on one token, continuing from ``buffer``, with the given depthwise kernel
    weight [m, K] and bias [m]."""
    with torch.random.fork_rng():   # building the module draws an init we overwrite; keep the caller's RNG
        conv = ShortConv(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        conv.conv1d.weight.copy_(weight.unsqueeze(1))
        conv.conv1d.bias.copy_(bias)
        buffer = buffer.clone()                 # the module updates its buffer in place
        return conv(x.unsqueeze(1), buffer)[:, 0], buffer


def _conv_cases(gen):
    cases = []
    for B, m, K in [(1, 3, 2), (2, randint(gen, 4, 6), 4), (randint(gen, 1, 3), 5, 3)]:
        args = (randn(gen, B, m), randn(gen, B, m, K - 1), randn(gen, m, K), randn(gen, m))
        cases.append(Case(args, label=f"B={B}, m={m}, kernel size K={K}"))
    return cases


def _conv_with(*, flip=False, activation=F.silu, bias_inside=True, use_bias=True, keep="newest", this_token=True):
    """The one-token short conv with one possible mistake."""
    def step(x, buffer, weight, bias):
        window = torch.cat([buffer, x.unsqueeze(-1)], dim=-1)           # oldest … newest
        taps = window if this_token else buffer
        y = (taps * (weight.flip(-1) if flip else weight)[:, -taps.shape[-1]:]).sum(-1)
        y = activation(y + bias) if use_bias and bias_inside else activation(y) + (bias if use_bias else 0)
        new_buffer = window[..., 1:] if keep == "newest" else buffer
        return y, new_buffer
    return step


SHORT_CONV_STEP = Exercise(
    id="short_conv_step",
    title="The short convolution, one token at a time (decoding)",
    signature=("short_conv_step(x, buffer, weight, bias) -> (y [B, m], new_buffer [B, m, K−1]); x [B, m]; "
               "buffer [B, m, K−1] the previous inputs, oldest first; weight [m, K]; bias [m]"),
    arg_names=("x", "buffer", "weight", "bias"),
    outputs=("y [B, m]", "buffer [B, m, K-1]"),
    reference=short_conv_reference,
    make_cases=_conv_cases,
    bugs=(
        Bug("kernel reversed", "PyTorch's Conv1d is a cross-correlation: the LAST tap weight[:, K−1] "
            "multiplies the newest input", _conv_with(flip=True)),
        Bug("missing SiLU", "the short conv is followed by SiLU", _conv_with(activation=lambda y: y)),
        Bug("missing bias", "the conv has a bias per channel", _conv_with(use_bias=False)),
        Bug("bias after the activation", "the bias belongs to the conv: add it before the SiLU",
            _conv_with(bias_inside=False)),
        Bug("buffer not updated", "the new buffer keeps the K−1 NEWEST inputs, this token's included "
            "(oldest first): drop the oldest one", _conv_with(keep="unchanged")),
        Bug("this token left out of the conv", "the kernel's window ends with THIS token's input (causal, "
            "not strictly causal): the buffer holds only the K−1 before it", _conv_with(this_token=False)),
    ),
    hints=("the window is the buffer followed by x (oldest … newest)?",
           "the kernel's last tap on the newest input; bias, then SiLU?",
           "the new buffer holds the K−1 most recent inputs, oldest first?"),
)


# ------------------------------------------------------------------ two_hop_residual

def _wired(mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm, *, two_hop: bool) -> Layer:
    """A Layer shell holding the given modules, so Layer.forward (the answer key) wires them."""
    layer = Layer.__new__(Layer)
    torch.nn.Module.__init__(layer)
    layer.config = ModelConfig(block="rodimus_plus", two_hop=two_hop)
    layer.mixer, layer.attn, layer.ffn = mixer, attn, ffn
    layer.mixer_norm, layer.attn_norm, layer.ffn_norm = mixer_norm, attn_norm, ffn_norm
    return layer


def two_hop_reference(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    """One Rodimus+ layer: Y = X + mixer(norm(X)); Z = Y + FFN(norm(Y + attn(norm(Y))))."""
    return _wired(mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm, two_hop=True)(x)


def _two_hop_cases(gen):
    cases = []
    for B, T, window in [(1, 3, None), (2, randint(gen, 4, 7), 3), (1, randint(gen, 5, 8), 2)]:
        config = ModelConfig(block="rodimus_plus", d_model=16, n_heads=2, mem_size=8, window=window,
                             chunk_size=4, backend="reference")
        with torch.random.fork_rng():
            torch.manual_seed(randint(gen, 0, 2**31 - 1))
            layer = Layer(config).eval()
            with torch.no_grad():   # distinct norm weights, so using the wrong norm shows
                for norm in (layer.mixer_norm, layer.attn_norm, layer.ffn_norm):
                    norm.weight.normal_(1.0, 0.5)
        x = randn(gen, B, T, config.d_model, scale=0.2)
        args = (x, layer.mixer, layer.attn, layer.ffn, layer.mixer_norm, layer.attn_norm, layer.ffn_norm)
        cases.append(Case(args, label=f"x [{B}, {T}, {config.d_model}], attention window={window}"))
    return cases


def _one_hop(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    return _wired(mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm, two_hop=False)(x)


def _attn_unused(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    y = x + mixer(mixer_norm(x))
    return y + ffn(ffn_norm(y))


def _attn_unnormed(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    y = x + mixer(mixer_norm(x))
    return y + ffn(ffn_norm(y + attn(y)))


def _ffn_unnormed(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    y = x + mixer(mixer_norm(x))
    return y + ffn(y + attn(attn_norm(y)))


def _norm_before_add(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    y = x + mixer(mixer_norm(x))
    return y + ffn(ffn_norm(y) + attn(attn_norm(y)))


def _mixer_residual_missing(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    y = mixer(mixer_norm(x))
    return y + ffn(ffn_norm(y + attn(attn_norm(y))))


def _attn_reads_x(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    y = x + mixer(mixer_norm(x))
    return y + ffn(ffn_norm(y + attn(attn_norm(x))))


def _norms_swapped(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    y = x + mixer(mixer_norm(x))
    return y + ffn(attn_norm(y + attn(ffn_norm(y))))


def _ffn_residual_missing(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    y = x + mixer(mixer_norm(x))
    return ffn(ffn_norm(y + attn(attn_norm(y))))


TWO_HOP = Exercise(
    id="two_hop_residual",
    title="The Rodimus+ layer and its two-hop residual",
    signature=("two_hop_residual(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm) -> z [B, T, d]; "
               "x [B, T, d]; the other arguments are callables [B, T, d] -> [B, T, d]"),
    arg_names=("x", "mixer", "attn", "ffn", "mixer_norm", "attn_norm", "ffn_norm"),
    outputs=("z [B, T, d]",),
    reference=two_hop_reference,
    make_cases=_two_hop_cases,
    bugs=(
        Bug("one-hop residual", "you added the attention output to the residual stream: in Rodimus+ it "
            "reaches the stream ONLY through the FFN (that is the two-hop residual)", _one_hop),
        Bug("attention output unused", "the attention output must feed the FFN", _attn_unused),
        Bug("missing normalisation before the attention", "the attention reads a normed input (attn_norm)",
            _attn_unnormed),
        Bug("missing normalisation before the FFN", "the FFN reads a normed input (ffn_norm)", _ffn_unnormed),
        Bug("normalised before adding", "normalise the SUM of the stream and the attention output, not the "
            "stream alone", _norm_before_add),
        Bug("mixer residual missing", "the mixer's output is ADDED to x (Y = X + …)", _mixer_residual_missing),
        Bug("attention reads the wrong stream", "the attention reads Y, the stream after the mixer, not x",
            _attn_reads_x),
        Bug("norms swapped", "each sub-block has its own norm: attn_norm before attn, ffn_norm before ffn",
            _norms_swapped),
        Bug("FFN residual missing", "the FFN's output is ADDED to Y (Z = Y + …)", _ffn_residual_missing),
    ),
    hints=("Y = X + mixer(mixer_norm(X))?",
           "the attention reads attn_norm(Y); its output is added to Y only inside the FFN's input?",
           "Z = Y + FFN(ffn_norm(…)): the stream itself never gets the attention output directly?"),
)


# ------------------------------------------------------------------------ state_bytes

def _bytes_cases(gen):
    def pick(options):
        return options[randint(gen, 0, len(options) - 1)]

    window = randint(gen, 16, 64)
    specs = [
        (dict(block="rodimus", d_model=pick([64, 128]), mem_size=pick([8, 16, 64]), conv_size=randint(gen, 2, 4)),
         randint(gen, 100, 4000), {}),
        (dict(block="rodimus", d_model=64, mem_size=32), 10, {"include_conv": False, "bytes_per_element": 4}),
        (dict(block="rodimus_plus", d_model=128, n_heads=pick([2, 4]), mem_size=16, window=window), window + 100, {}),
        (dict(block="rodimus_plus", d_model=128, n_heads=4, mem_size=16, window=window), window - 5, {}),
        (dict(block="transformer", d_model=128, n_heads=4), randint(gen, 100, 1000), {}),
        (dict(block="transformer", d_model=128, n_heads=4, attn_layout="gqa", n_kv_heads=2, window=window),
         window + 7, {"bytes_per_element": 4}),
        (dict(block="transformer", d_model=128, n_heads=4, attn_layout="mqa"), 300, {}),
    ]
    cases = []
    for fields, context, kwargs in specs:
        config = ModelConfig(n_layers=randint(gen, 1, 4), **fields)
        label = ", ".join(f"{k}={v}" for k, v in fields.items())
        extra = "".join(f", {k}={v}" for k, v in kwargs.items())
        cases.append(Case((config, context), kwargs,
                          label=f"ModelConfig({label}, n_layers={config.n_layers}), context_len={context}{extra}"))
    return cases


def _bytes_with(*, key_heads=lambda c: c.num_key_heads, value_heads=lambda c: c.num_value_heads, window=True,
                conv_taps=lambda c: c.conv_size - 1, honour_include_conv=True, layers=True,
                width=lambda c: c.d_inner, honour_bytes=True, count_keys=True):
    """cache_bytes with one possible mistake."""
    def state_bytes(config, context_len, *, bytes_per_element=2, include_conv=True):
        c = config
        per_layer = 0
        if c.has_mixer:
            per_layer += c.mem_size * width(c)
            if (include_conv or not honour_include_conv) and c.short_conv:
                per_layer += conv_taps(c) * width(c)
        if c.has_attention:
            kept = context_len if (c.window is None or not window) else min(context_len, c.window)
            per_layer += kept * ((key_heads(c) if count_keys else 0) + value_heads(c)) * c.head_dim
        return per_layer * (c.n_layers if layers else 1) * (bytes_per_element if honour_bytes else 2)
    return state_bytes


STATE_BYTES = Exercise(
    id="state_bytes",
    title="Decoding memory: Rodimus' fixed state vs a growing KV cache",
    signature=("cache_bytes(config, context_len, *, bytes_per_element=2, include_conv=True) -> int bytes per "
               "sequence; config a rodimus_lab.ModelConfig"),
    arg_names=("config", "context_len"),
    outputs=("bytes",),
    reference=cache_bytes,
    make_cases=_bytes_cases,
    bugs=(
        Bug("one key head per query head in SKA", "shared-key attention caches ONE key head (config.num_key_heads) "
            "but H value heads", _bytes_with(key_heads=lambda c: c.num_heads)),
        Bug("values counted like keys", "the value cache has config.num_value_heads heads (H in SKA)",
            _bytes_with(value_heads=lambda c: c.num_key_heads)),
        Bug("keys not counted", "a KV cache holds keys AND values", _bytes_with(count_keys=False)),
        Bug("window ignored", "a sliding window of W keys caches at most W tokens, however long the context",
            _bytes_with(window=False)),
        Bug("conv buffer forgotten", "the short conv keeps its last K−1 inputs (m channels) per layer",
            _bytes_with(honour_include_conv=False, conv_taps=lambda c: 0)),
        Bug("conv buffer off by one", "the conv buffer holds conv_size − 1 inputs (the newest one arrives "
            "with the token)", _bytes_with(conv_taps=lambda c: c.conv_size)),
        Bug("include_conv ignored", "include_conv=False leaves the conv buffer out", _bytes_with(honour_include_conv=False)),
        Bug("layers forgotten", "every layer keeps its own state: multiply by n_layers", _bytes_with(layers=False)),
        Bug("state width uses d_model", "the state is n × m with m = config.d_inner (the expanded width), "
            "not d_model", _bytes_with(width=lambda c: c.d_model)),
        Bug("bytes_per_element ignored", "multiply the element count by bytes_per_element", _bytes_with(honour_bytes=False)),
    ),
    hints=("Rodimus state per layer: mem_size × d_inner (+ (conv_size − 1) × d_inner for the conv)?",
           "attention cache per layer: kept tokens × (key heads + value heads) × head_dim, kept ≤ window?",
           "× n_layers × bytes_per_element; blocks without a mixer or attention add nothing for it?"),
)



# -------------------------------------------------------------------- rodimus_mixer

class _Refused:
    """Stands in for a method of a module handed to the student: the exercise is to write it."""

    def __init__(self, owner: str, name: str):
        self.owner, self.name = owner, name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.owner}.{self.name} is switched off in this exercise: compute the mixer from its "
                           "parameters (mixer.fc, mixer.short_conv.conv1d, mixer.in_proj, mixer.mem_gate_proj, "
                           "mixer.ch_gate_proj, mixer.residual_weight, mixer.act_norm, mixer.out_proj)")


def _lock(mixer: RodimusMixer) -> RodimusMixer:
    """Switch off every method the mixer and its short conv define (forward included): calling mixer(x)
    raises. Linear layers and the RMSNorm still run: they are one matrix product or one formula."""
    for module, owner in ((mixer, "mixer"), (mixer.short_conv, "mixer.short_conv")):
        for name, value in vars(type(module)).items():
            if callable(value) and not name.startswith("__"):
                module.__dict__[name] = _Refused(owner, name)
    return mixer


def mixer_reference(mixer, x):
    """RodimusMixer.forward of the library, on an unlocked copy of ``mixer``."""
    unlocked = copy.deepcopy(mixer)
    for module in (unlocked, unlocked.short_conv):
        for name in [n for n, v in vars(module).items() if isinstance(v, _Refused)]:
            del module.__dict__[name]
    return unlocked(x)


def _mixer_cases(gen):
    cases = []
    for B, T, d, n, K in [(1, 1, 16, 4, 4), (2, randint(gen, 5, 9), 16, 8, 3), (1, randint(gen, 7, 12), 24, 6, 4)]:
        config = ModelConfig(d_model=d, mem_size=n, conv_size=K, chunk_size=4, backend="reference")
        with torch.random.fork_rng():
            torch.manual_seed(randint(gen, 0, 2**31 - 1))
            mixer = RodimusMixer(config).eval()
            with torch.no_grad():   # every parameter away from its initial value, so each mistake shows
                for p in mixer.parameters():
                    p.normal_(0.0, 0.4)
                mixer.residual_weight.normal_(1.0, 0.5)
                mixer.act_norm.weight.normal_(1.0, 0.3)
        x = randn(gen, B, T, d)
        label = f"x [{B}, {T}, {d}], mem_size n={n}, d_inner m={config.d_inner}, conv_size={K}"
        cases.append(Case((_lock(mixer), x), label=label))
    return cases


def _mixer_with(*, value_from="x_pre", value_gate=True, key_norm=True, alpha_hat=True, tau_in_decay=True,
                skip_from="x_conv", output="norm(o·silu(z))", flip_kernel=False, conv_silu=True, scale=True,
                swap_qk=False, swap_gate_logits=False):
    """The Rodimus mixer written out from its parameters, with one possible mistake."""
    def rodimus_mixer(mixer, x):
        c = mixer.config
        m, n, K = c.d_inner, c.mem_size, c.conv_size
        B, T, _ = x.shape
        x_pre, z = (x @ mixer.fc.weight.T).split(m, dim=-1)
        weight = mixer.short_conv.conv1d.weight[:, 0]
        weight = weight.flip(-1) if flip_kernel else weight
        padded = torch.cat([x.new_zeros(B, K - 1, m), x_pre], dim=1)
        conv = sum(padded[:, i:i + T] * weight[:, i] for i in range(K)) + mixer.short_conv.conv1d.bias
        x_conv = F.silu(conv) if conv_silu else conv
        q, k = (x_conv @ mixer.in_proj.weight.T).split(n, dim=-1)
        if swap_qk:
            q, k = k, q
        g_logits, tau_logits = (x_conv @ mixer.mem_gate_proj.weight.T + mixer.mem_gate_proj.bias).split(n, dim=-1)
        if swap_gate_logits:
            g_logits, tau_logits = tau_logits, g_logits
        g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
        log_alpha = -tau * g if tau_in_decay else -g
        if key_norm:
            k = k / k.norm(dim=-1, keepdim=True)
        if alpha_hat:
            k = g ** tau * k
        low, up = mixer.ch_gate_proj
        source = x_pre if value_from == "x_pre" else x_conv
        v = torch.sigmoid(x_pre @ low.weight.T @ up.weight.T + up.bias) * source if value_gate else source
        S, outputs = x.new_zeros(B, n, m), []
        for t in range(T):
            S = log_alpha[:, t, :, None].exp() * S + k[:, t, :, None] * v[:, t, None, :]
            outputs.append(torch.einsum("bn,bnm->bm", q[:, t], S) * (n ** -0.5 if scale else 1.0))
        o = torch.stack(outputs, dim=1)
        if skip_from is not None:
            o = o + mixer.residual_weight * (x_conv if skip_from == "x_conv" else x_pre)

        def rms(h):
            return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + c.norm_eps) * mixer.act_norm.weight
        h = {"norm(o·silu(z))": lambda: rms(o * F.silu(z)), "norm(o)·silu(z)": lambda: rms(o) * F.silu(z),
             "norm(o)": lambda: rms(o)}[output]()
        return h @ mixer.out_proj.weight.T
    return rodimus_mixer


RODIMUS_MIXER = Exercise(
    id="rodimus_mixer",
    title="The whole Rodimus mixer from its parameters",
    signature=("rodimus_mixer(mixer, x) -> y [B, T, d]; mixer a rodimus_lab.model.RodimusMixer (gate 'ddts', "
               "short conv, key norm) whose own methods are switched off; x [B, T, d] the normed stream"),
    arg_names=("mixer", "x"),
    outputs=("y [B, T, d]",),
    reference=mixer_reference,
    make_cases=_mixer_cases,
    bugs=(
        Bug("value from the convolved branch", "the value is the PRE-conv branch: v = β̂ ⊙ x′ (x′ straight from "
            "mixer.fc), while q, k and the gates read x̃", _mixer_with(value_from="x_conv")),
        Bug("value gate missing", "the value is gated: v = σ(x′ W₁ W₂ + b) ⊙ x′ with mixer.ch_gate_proj",
            _mixer_with(value_gate=False)),
        Bug("key not normalised", "the key enters the state as α̂ ⊙ k / ‖k‖ (L2 norm over the n key dims)",
            _mixer_with(key_norm=False)),
        Bug("α̂ missing from the key", "the write gate α̂ = g^τ scales the (normalised) key", _mixer_with(alpha_hat=False)),
        Bug("τ missing in the decay", "the decay is α = e^{−τg}: the temperature multiplies g in the exponent too",
            _mixer_with(tau_in_decay=False)),
        Bug("g and τ logits swapped", "mixer.mem_gate_proj gives [g logits, τ logits] in this order (n each)",
            _mixer_with(swap_gate_logits=True)),
        Bug("q and k swapped", "mixer.in_proj gives [q, k] in this order (n each)", _mixer_with(swap_qk=True)),
        Bug("missing scale", "the state is read as q_t S_t · n^−1/2", _mixer_with(scale=False)),
        Bug("skip d ⊙ x̃ missing", "after DDTS add mixer.residual_weight ⊙ x̃ (the conv output)",
            _mixer_with(skip_from=None)),
        Bug("skip taken from x′", "the skip adds d ⊙ x̃, the conv output, not the pre-conv branch",
            _mixer_with(skip_from="x_pre")),
        Bug("norm before the output gate", "the output is RMSNorm(o ⊙ SiLU(z)): gate first, then normalise",
            _mixer_with(output="norm(o)·silu(z)")),
        Bug("output gate missing", "multiply by SiLU(z) (the second half of mixer.fc's output) before the norm",
            _mixer_with(output="norm(o)")),
        Bug("kernel reversed", "Conv1d is a cross-correlation: tap K−1 multiplies the newest input",
            _mixer_with(flip_kernel=True)),
        Bug("SiLU after the conv missing", "x̃ = SiLU(conv(x′) + bias)", _mixer_with(conv_silu=False)),
    ),
    hints=("[x′, z] = x W_fcᵀ; x̃ = SiLU(causal depthwise conv(x′) + bias)?",
           "q, k from x̃; g = softplus, τ = sigmoid of x̃ W_gateᵀ + b; key α̂ ⊙ k/‖k‖; value β̂ ⊙ x′?",
           "o = DDTS + d ⊙ x̃; y = RMSNorm(o ⊙ SiLU(z)) W_outᵀ (RMSNorm with mixer.act_norm's weight and eps)?"),
)

EXERCISES = (SHORT_CONV_STEP, TWO_HOP, STATE_BYTES, RODIMUS_MIXER)
