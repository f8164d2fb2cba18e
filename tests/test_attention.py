"""attention() equals a dense masked softmax for every head layout and window; RoPE; windows."""

import math

import pytest
import torch

from rodimus_lab.attention import attention, attention_mask, rope, window_from_fla, window_from_official, xpos_scale

LAYOUTS = {"mha": (4, 4), "gqa": (2, 2), "mqa": (1, 1), "ska": (1, 4)}   # (key heads, value heads) for 4 query heads


def dense_reference(q, k, v, window):
    """Loop over heads and queries: softmax over the keys j with i − window < j ≤ i."""
    B, T, Hq, d = q.shape
    out = torch.zeros(B, T, Hq, v.shape[-1], dtype=q.dtype)
    for h in range(Hq):
        kh = k[:, :, h % k.shape[2]]   # query head h reads key/value head h mod H_kv (the official pairing)
        vh = v[:, :, h % v.shape[2]]
        for i in range(T):
            lo = 0 if window is None else max(0, i - window + 1)
            scores = (q[:, i, h, None, :] * kh[:, lo:i + 1]).sum(-1) / math.sqrt(d)
            out[:, i, h] = (scores.softmax(-1)[..., None] * vh[:, lo:i + 1]).sum(1)
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("window", [None, 1, 2, 5, 11, 40])
def test_matches_dense_reference(layout, window):
    Hk, Hv = LAYOUTS[layout]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 11, 4, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 11, Hk, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 11, Hv, 6, generator=g, dtype=torch.float64)
    o, w = attention(q, k, v, window=window, return_weights=True)
    ref = dense_reference(q, k, v, window)
    assert torch.allclose(o, ref, atol=1e-12, rtol=0)
    assert w.shape == (2, 4, 11, 11)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 11, dtype=torch.float64))
    # weights outside the causal window are exactly zero
    assert (w[..., ~attention_mask(11, 11, window=window)] == 0).all()


def test_gqa_pairs_query_head_j_with_kv_head_j_mod_hk():
    """4 query heads, 2 kv heads: heads 0 and 2 read kv head 0, heads 1 and 3 read kv head 1."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 5, 1, 8, generator=g, dtype=torch.float64).expand(1, 5, 4, 8)   # the same query in every head
    k = torch.randn(1, 5, 2, 8, generator=g, dtype=torch.float64)
    v = torch.randn(1, 5, 2, 8, generator=g, dtype=torch.float64)
    o = attention(q, k, v)
    for j in range(4):
        assert torch.allclose(o[:, :, j], attention(q[:, :, :1], k[:, :, j % 2:j % 2 + 1], v[:, :, j % 2:j % 2 + 1])[:, :, 0])
    assert not torch.allclose(o[:, :, 1], o[:, :, 2])


def test_decode_query_sees_the_last_keys():
    """q of length 1 is the last position: equals the last row of the full computation."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 9, 4, 8, generator=g)
    k = torch.randn(1, 9, 1, 8, generator=g)
    v = torch.randn(1, 9, 4, 8, generator=g)
    full = attention(q, k, v, window=3)
    last = attention(q[:, -1:], k, v, window=3)
    assert torch.allclose(last[:, 0], full[:, -1], atol=1e-6)


def test_window_conventions():
    # official window_size=W: W//2 previous tokens plus itself; fla: exactly W keys
    assert window_from_official(4096) == 2049
    assert window_from_official(4) == 3 and window_from_official(5) == 3 and window_from_official(1) == 1
    assert window_from_fla(4) == 4
    mask = attention_mask(6, 6, window=window_from_official(4))
    assert mask[5].tolist() == [False, False, False, True, True, True]     # (W//2, 0) = (2, 0) in flash-attn
    mask = attention_mask(6, 6, window=window_from_fla(4))
    assert mask[5].tolist() == [False, False, True, True, True, True]      # (W−1, 0) = (3, 0) in flash-attn


def test_non_causal_and_scale():
    q, k, v = (torch.randn(1, 5, 2, 4, dtype=torch.float64) for _ in range(3))
    o = attention(q, k, v, causal=False, scale=1.0)
    ref = torch.einsum("bhij,bjhd->bihd", torch.einsum("bihd,bjhd->bhij", q, k).softmax(-1), v)
    assert torch.allclose(o, ref)


def test_rope_rotates_pairs_and_is_relative():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 7, 2, 8, generator=g, dtype=torch.float64)
    y = rope(x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1))               # a rotation
    assert torch.allclose(y[:, 0], x[:, 0])                             # position 0 untouched
    # rotate-half: dimension i pairs with i + d/2, angle pos · base^(−2i/d)
    pos, i, d = 3, 1, 8
    theta = pos * 10000 ** (-2 * i / d)
    a, b = x[0, pos, 0, i], x[0, pos, 0, i + d // 2]
    assert torch.allclose(y[0, pos, 0, i], a * math.cos(theta) - b * math.sin(theta))
    assert torch.allclose(y[0, pos, 0, i + d // 2], b * math.cos(theta) + a * math.sin(theta))
    # ⟨rope(q)_s, rope(k)_t⟩ depends only on s − t
    q, k = torch.randn(1, 1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 1, 8, dtype=torch.float64)
    dot = lambda s, t: (rope(q, offset=s) * rope(k, offset=t)).sum()
    assert torch.allclose(dot(5, 2), dot(13, 10))
    # offset equals slicing a longer sequence
    assert torch.allclose(rope(x[:, 4:], offset=4), y[:, 4:])


def test_partial_rope_rotates_only_the_leading_dims():
    x = torch.randn(1, 6, 2, 16, dtype=torch.float64)
    y = rope(x, dims=8, base=500.0)
    assert torch.equal(y[..., 8:], x[..., 8:])
    assert torch.allclose(y[..., :8], rope(x[..., :8], base=500.0))   # frequencies base^(−2i/8)
    assert torch.equal(rope(x, dims=0), x)


def test_interleaved_rope_pairs_neighbours():
    x = torch.randn(1, 7, 2, 8, dtype=torch.float64)
    y = rope(x, interleaved=True)
    pos, i, d = 5, 2, 8
    theta = pos * 10000 ** (-2 * i / d)
    a, b = x[0, pos, 1, 2 * i], x[0, pos, 1, 2 * i + 1]
    assert torch.allclose(y[0, pos, 1, 2 * i], a * math.cos(theta) - b * math.sin(theta))
    assert torch.allclose(y[0, pos, 1, 2 * i + 1], b * math.cos(theta) + a * math.sin(theta))
    # the same rotation as rotate-half on the permuted entries
    perm = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
    assert torch.allclose(y[..., perm], rope(x[..., perm]))


def test_xpos_scales_each_pair_around_the_center():
    x = torch.randn(1, 9, 1, 8, dtype=torch.float64)
    y = rope(x, xpos_scale_base=4.0, xpos_center=3)
    plain = rope(x)
    zeta = (torch.arange(0, 8, 2, dtype=torch.float64) + 0.4 * 8) / (1.4 * 8)
    for n in range(9):
        scale = torch.cat([zeta, zeta]) ** ((n - 3) / 4.0)
        assert torch.allclose(y[0, n, 0], plain[0, n, 0] * scale)
    assert torch.allclose(xpos_scale(torch.arange(9), 8, scale_base=4.0, center=3)[3], torch.ones(4, dtype=torch.float64))
    # offset equals slicing, as for plain RoPE (decoding sees absolute positions)
    assert torch.allclose(rope(x[:, 5:], offset=5, xpos_scale_base=4.0, xpos_center=3), y[:, 5:])


class TestBadInput:
    def test_heads_must_divide(self):
        q, k, v = torch.randn(1, 4, 4, 8), torch.randn(1, 4, 3, 8), torch.randn(1, 4, 4, 8)
        with pytest.raises(ValueError, match=r"k heads \(3\) must divide the query heads \(4\)"):
            attention(q, k, v)

    def test_window_below_one(self):
        q = torch.randn(1, 4, 2, 8)
        with pytest.raises(ValueError, match="window must be None or an int ≥ 1"):
            attention(q, q, q, window=0)
        with pytest.raises(ValueError, match="window_size must be ≥ 1"):
            window_from_official(0)

    def test_window_needs_causal(self):
        q = torch.randn(1, 4, 2, 8)
        with pytest.raises(ValueError, match="window needs causal=True"):
            attention(q, q, q, window=2, causal=False)

    def test_shapes(self):
        q = torch.randn(1, 4, 2, 8)
        with pytest.raises(ValueError, match="q must be 4-D"):
            attention(q[0], q, q)
        with pytest.raises(ValueError, match="k head dim must equal q head dim"):
            attention(q, q[..., :4], q)
        with pytest.raises(ValueError, match="v must have as many positions as k"):
            attention(q, q, q[:, :3])
        with pytest.raises(ValueError, match="RoPE needs an even number of rotated dims"):
            rope(torch.randn(1, 2, 1, 5))
