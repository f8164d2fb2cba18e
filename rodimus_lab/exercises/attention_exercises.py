"""Exercises on SW-SKA: shared-key attention, the sliding-window mask, RoPE, and all three at once.

Answer key: :mod:`rodimus_lab.attention`.
"""

from __future__ import annotations

import torch

from ..attention import attention, attention_mask, rope, rope_cos_sin
from .harness import Bug, Case, Exercise, randint, randn

# --------------------------------------------------------------------- ska_attention


def ska_reference(q, k, v, *, scale=None):
    """Causal shared-key attention: the library's one attention with one key head."""
    return attention(q, k, v, scale=scale)


def _ska_cases(gen):
    cases = []
    for B, T, H, d, scale in [(1, 1, 2, 4, None), (2, randint(gen, 4, 7), 3, 4, None), (1, randint(gen, 5, 8), 2, 6, 0.2)]:
        q, k, v = randn(gen, B, T, H, d), randn(gen, B, T, 1, d), randn(gen, B, T, H, d)
        kwargs = {} if scale is None else {"scale": scale}
        cases.append(Case((q, k, v), kwargs, label=f"B={B}, T={T}, H={H}, d={d}, scale={scale}"))
    return cases


def _ska_with(mask_of, *, scale_of=lambda d, scale: d ** -0.5 if scale is None else scale, softmax_dim=-1,
              renormalise=True, value_heads=None):
    """Shared-key attention with one possible mistake (which mask, scale, softmax axis, value heads)."""
    def ska(q, k, v, *, scale=None):
        T, d = q.shape[1], q.shape[-1]
        scores = torch.einsum("bihd,bjd->bhij", q, k[:, :, 0]) * scale_of(d, scale)
        mask = mask_of(torch.ones(T, T, dtype=torch.bool))
        if renormalise:
            weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=softmax_dim)
        else:
            weights = scores.softmax(dim=-1) * mask
        vv = v if value_heads is None else v[:, :, :value_heads].expand_as(v)
        return torch.einsum("bhij,bjhd->bihd", weights, vv)
    return ska


def _causal(ones):
    return ones.tril()


SKA = Exercise(
    id="ska_attention",
    title="Shared-key attention: one key head, one value head per query head",
    signature=("ska_attention(q, k, v, *, scale=None) -> o [B, T, H, d]; q [B, T, H, d], k [B, T, 1, d] "
               "(ONE key head), v [B, T, H, d]; causal"),
    arg_names=("q", "k", "v"),
    outputs=("o [B, T, H, d]",),
    reference=ska_reference,
    make_cases=_ska_cases,
    bugs=(
        Bug("missing causal mask", "every query also sees later keys: mask j > i", _ska_with(lambda ones: ones)),
        Bug("causal mask transposed", "your mask lets query i see keys j ≥ i (the future): keep j ≤ i",
            _ska_with(lambda ones: ones.triu())),
        Bug("missing scale", "scores are ⟨q, k⟩ · d^−1/2 (or scale when given)", _ska_with(_causal, scale_of=lambda d, s: 1.0)),
        Bug("wrong scale", "the default scale is d^−1/2 (square root), not 1/d",
            _ska_with(_causal, scale_of=lambda d, s: 1 / d if s is None else s)),
        Bug("scale argument ignored", "when scale is passed it replaces d^−1/2", _ska_with(_causal, scale_of=lambda d, s: d ** -0.5)),
        Bug("softmax over the wrong axis", "normalise over the KEYS j of each query i (the last axis of the "
            "[B, H, i, j] scores)", _ska_with(_causal, softmax_dim=-2)),
        Bug("missing normalisation", "you zeroed the masked weights after the softmax, so rows no longer sum "
            "to 1: mask the scores before the softmax (with −inf)", _ska_with(_causal, renormalise=False)),
        Bug("values shared across heads", "SKA shares the KEY only: query head h reads value head h (MQA would "
            "share the values too)", _ska_with(_causal, value_heads=1)),
    ),
    hints=("scores [B, H, i, j] = ⟨q_i^h, k_j⟩ · scale, the single key head broadcast to every query head?",
           "mask j > i with −inf BEFORE the softmax over j?",
           "output head h mixes value head h?"),
)


# --------------------------------------------------------------- sliding_window_mask

def _mask_cases(gen):
    T = randint(gen, 5, 9)
    w = randint(gen, 2, T - 2)
    k_len = randint(gen, 6, 10)
    specs = [(T, T, w, True), (T, T, 1, True), (T, T, T + 2, True), (T, T, None, True), (1, k_len, w, True),
             (3, k_len, randint(gen, 2, 4), True), (4, 4, None, False)]
    cases = []
    for q_len, kl, window, causal in specs:
        kwargs = {"window": window} if causal else {"window": window, "causal": False}
        cases.append(Case((q_len, kl), kwargs, label=f"q_len={q_len}, k_len={kl}, window={window}, causal={causal}"))
    return cases


def _mask_with(*, shift=0, first_positions=False, symmetric=False, honour_causal=True, transpose=False):
    """attention_mask with one possible mistake."""
    def mask_fn(q_len, k_len, *, window=None, causal=True, device=None):
        q_pos = torch.arange(q_len)[:, None] + (0 if first_positions else k_len - q_len)
        k_pos = torch.arange(k_len)[None, :]
        mask = torch.ones(q_len, k_len, dtype=torch.bool)
        if causal or not honour_causal:
            mask &= k_pos <= q_pos
        if window is not None and symmetric:
            mask = (k_pos - q_pos).abs() < window
        elif window is not None:
            mask &= k_pos > q_pos - window - shift
        if transpose:
            if q_len != k_len:
                raise ValueError("only square masks transpose")
            mask = mask.T.contiguous()
        return mask
    return mask_fn


WINDOW_MASK = Exercise(
    id="sliding_window_mask",
    title="The causal sliding-window mask (window = keys a query sees, itself included)",
    signature=("attention_mask(q_len, k_len, *, window=None, causal=True, device=None) -> bool [q_len, k_len]; "
               "queries are the LAST q_len of the k_len positions"),
    arg_names=("q_len", "k_len"),
    outputs=("mask [i, j]",),
    reference=attention_mask,
    make_cases=_mask_cases,
    bugs=(
        Bug("window off by one (one key too many)", "each query must see exactly `window` keys, ITSELF "
            "included: count the diagonal", _mask_with(shift=1)),
        Bug("window off by one (one key too few)", "each query must see exactly `window` keys, itself "
            "included — you keep one fewer", _mask_with(shift=-1)),
        Bug("causal mask transposed", "row i is a query, column j a key; a query sees keys j ≤ i",
            _mask_with(transpose=True)),
        Bug("queries at the wrong positions", "when q_len < k_len the queries are the LAST q_len positions "
            "(decoding: the one new token sits at position k_len − 1)", _mask_with(first_positions=True)),
        Bug("window not causal", "the window looks back only: a band |i − j| < window lets queries see the future",
            _mask_with(symmetric=True)),
        Bug("causal=False ignored", "with causal=False and no window every key is visible",
            _mask_with(honour_causal=False)),
    ),
    hints=("query i sits at position k_len − q_len + i?",
           "a query at position p sees keys p − window + 1 … p (window keys, itself included)?",
           "window=None: no window limit; causal=False: no causal limit?",
           "return a bool tensor (True = may attend)?"),
)


# ------------------------------------------------------------------------------ rope

def _rope_cases(gen):
    cases = []
    for B, T, H, d, offset, base in [(1, 1, 1, 4, 0, None), (2, randint(gen, 4, 7), 2, 8, 0, None),
                                     (1, randint(gen, 3, 6), 3, 6, randint(gen, 3, 50), None), (1, 5, 2, 8, 2, 500.0)]:
        kwargs = {}
        if offset:
            kwargs["offset"] = offset
        if base is not None:
            kwargs["base"] = base
        cases.append(Case((randn(gen, B, T, H, d),), kwargs, label=f"x {[B, T, H, d]}, offset={offset}, base={base or 10000.0}"))
    return cases


def _rope_with(*, positions_from=0, rotate="half", freq_exponent=2, honour_offset=True, honour_base=True,
               angle_layout="cat"):
    """RoPE with one possible mistake."""
    def rope_fn(x, *, offset=0, base=10000.0):
        T, d = x.shape[1], x.shape[-1]
        base = base if honour_base else 10000.0
        pos = torch.arange(T, dtype=torch.float64) + (offset if honour_offset else 0) + positions_from
        inv_freq = base ** (-freq_exponent * torch.arange(d // 2, dtype=torch.float64) / d)
        angles = pos[:, None] * inv_freq[None, :]
        angles = torch.cat([angles, angles], -1) if angle_layout == "cat" else angles.repeat_interleave(2, -1)
        cos, sin = angles.cos().float()[None, :, None], angles.sin().float()[None, :, None]
        x1, x2 = x.chunk(2, dim=-1)
        if rotate == "half":
            rotated = torch.cat([-x2, x1], -1)
        elif rotate == "swapped":
            rotated = torch.cat([x2, -x1], -1)
        else:  # interleaved pairs (2i, 2i+1)
            rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2)
        return x * cos + rotated * sin
    return rope_fn


ROPE = Exercise(
    id="rope",
    title="Rotary position embedding, non-interleaved rotate-half",
    signature="rope(x, *, offset=0, base=10000.0) -> tensor like x [B, T, H, d]; d even",
    arg_names=("x",),
    outputs=("out [B, T, H, d]",),
    reference=rope,
    make_cases=_rope_cases,
    bugs=(
        Bug("RoPE halves swapped", "your pairs rotate the wrong way: check which half gets the minus sign "
            "in rotate-half", _rope_with(rotate="swapped")),
        Bug("interleaved pairs", "this is the non-interleaved (rotate-half) layout: dim i pairs with "
            "i + d/2, not with i + 1", _rope_with(rotate="interleaved", angle_layout="interleave")),
        Bug("angles laid out for interleaved pairs", "dim i and dim i + d/2 share one frequency: the angle "
            "table is two copies of the d/2 angles side by side, not each angle repeated twice",
            _rope_with(angle_layout="interleave")),
        Bug("wrong frequencies", "frequency i is base^(−2i/d) for i = 0 … d/2 − 1 (note the 2)",
            _rope_with(freq_exponent=1)),
        Bug("offset ignored", "the first token sits at position `offset` (decoding continues a sequence)",
            _rope_with(honour_offset=False)),
        Bug("positions off by one", "positions start at offset (0 by default), not at 1", _rope_with(positions_from=1)),
        Bug("base ignored", "use the `base` argument for the frequencies", _rope_with(honour_base=False)),
    ),
    hints=("positions offset, offset + 1, …, one per token (dim 1)?",
           "frequencies base^(−2i/d), i < d/2, shared by dims i and i + d/2?",
           "rotate-half pairs the first half with the second half?"),
)



# ---------------------------------------------------------------------- sw_ska_layer

def sw_ska_reference(q, k, v, window, offset=0):
    """Sliding-window shared-key attention as a Rodimus+ layer computes it: RoPE on q and the one key head
    (positions offset, offset + 1, …), then causal softmax attention over the last ``window`` keys.

    (A common offset of queries and keys cancels in every score — RoPE depends on distances only — so
    ``o`` does not depend on it; the cases vary it so that a student can find that out.)"""
    return attention(rope(q, offset=offset), rope(k, offset=offset), v, window=window)


def _sw_ska_cases(gen):
    cases = []
    for B, T, H, d, window, offset in [(1, 1, 2, 4, 1, 0), (2, randint(gen, 6, 9), 3, 8, randint(gen, 2, 4), 0),
                                       (1, randint(gen, 7, 10), 2, 6, 3, randint(gen, 5, 40)),
                                       (1, 6, 4, 8, 9, randint(gen, 1, 9))]:
        q, k, v = randn(gen, B, T, H, d), randn(gen, B, T, 1, d), randn(gen, B, T, H, d)
        label = f"B={B}, T={T}, H={H}, d={d}, window={window}, offset={offset}"
        cases.append(Case((q, k, v, window), {"offset": offset} if offset else {}, label=label))
    return cases


def _sw_ska_with(*, rope_q=True, rope_k=True, rope_fn=rope, window_shift=0, use_window=True,
                 causal=True, mask_after_softmax=False, scale=True, shared_values=False):
    """SW-SKA with one possible mistake."""
    def sw_ska_layer(q, k, v, window, offset=0):
        T, d = q.shape[1], q.shape[-1]
        q = rope_fn(q, offset=offset) if rope_q else q
        k = rope_fn(k, offset=offset) if rope_k else k
        scores = torch.einsum("bihd,bjd->bhij", q, k[:, :, 0]) * (d ** -0.5 if scale else 1.0)
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        visible = torch.ones(T, T, dtype=torch.bool)
        if causal:
            visible &= j <= i
        if use_window:
            visible &= j > i - (window + window_shift)
        if mask_after_softmax:
            weights = scores.softmax(-1) * visible
        else:
            weights = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        values = v[:, :, :1].expand_as(v) if shared_values else v
        return torch.einsum("bhij,bjhd->bihd", weights, values)
    return sw_ska_layer


def _rope_swapped(x, *, offset=0):
    cos, sin = rope_cos_sin(torch.arange(offset, offset + x.shape[1]), x.shape[-1], dtype=x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, None] + torch.cat([x2, -x1], dim=-1) * sin[:, None]


SW_SKA_LAYER = Exercise(
    id="sw_ska_layer",
    title="Sliding-window shared-key attention with RoPE, all at once",
    signature=("sw_ska_layer(q, k, v, window, offset=0) -> o [B, T, H, d]; q [B, T, H, d], k [B, T, 1, d] (ONE key "
               "head, not yet rotated), v [B, T, H, d]; token t sits at position offset + t"),
    arg_names=("q", "k", "v", "window"),
    outputs=("o [B, T, H, d]",),
    reference=sw_ska_reference,
    make_cases=_sw_ska_cases,
    bugs=(
        Bug("RoPE missing on the key", "rotate the shared key too: scores compare rotated q with rotated k",
            _sw_ska_with(rope_k=False)),
        Bug("RoPE missing on the query", "rotate the queries too: only then does a score depend on the distance",
            _sw_ska_with(rope_q=False)),
        Bug("RoPE missing", "rotate q and k by their positions before the dot product", _sw_ska_with(rope_q=False, rope_k=False)),
        Bug("RoPE halves swapped", "rotate-half: (x₁, x₂) → (x₁ cos − x₂ sin, x₂ cos + x₁ sin)",
            _sw_ska_with(rope_fn=_rope_swapped)),
        Bug("window off by one (one key too many)", "a query sees exactly `window` keys, ITSELF included",
            _sw_ska_with(window_shift=1)),
        Bug("window off by one (one key too few)", "a query sees exactly `window` keys, itself included — you "
            "keep one fewer", _sw_ska_with(window_shift=-1)),
        Bug("window ignored", "keys older than the last `window` positions get no weight", _sw_ska_with(use_window=False)),
        Bug("missing causal mask", "a query never sees later keys", _sw_ska_with(causal=False)),
        Bug("mask applied after the softmax", "mask the scores with −inf BEFORE the softmax, so that each row sums to 1",
            _sw_ska_with(mask_after_softmax=True)),
        Bug("missing scale", "scores are ⟨q, k⟩ · d^−1/2", _sw_ska_with(scale=False)),
        Bug("values shared across heads", "SKA shares the KEY only: query head h reads value head h",
            _sw_ska_with(shared_values=True)),
    ),
    hints=("q and the one key head rotated with RoPE at positions offset … offset + T − 1 (rotate-half)?",
           "scores [B, H, i, j] = ⟨q_i^h, k_j⟩ · d^−1/2; visible iff i − window < j ≤ i; −inf elsewhere, then softmax?",
           "output head h mixes value head h?"),
)

EXERCISES = (SKA, WINDOW_MASK, ROPE, SW_SKA_LAYER)
