"""Models: a from-scratch recomputation of the equations (docs/equations.md) agrees; decoding = forward;
official checkpoints load; configs refuse bad values."""

import math

import pytest
import torch
import torch.nn.functional as F

from rodimus_lab import GATES, ModelConfig, RodimusLM, cache_elements, config_from_official, ddts, load_official
from rodimus_lab.official import official_state_dict


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def rms_norm(x, w, eps=1e-5):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


# ---------------------------------------------------------------- from scratch

def rodimus_block_from_notes(mixer, x):
    """docs/equations.md §2, token by token, written from the equations (not from model.py)."""
    W = {name: p.detach() for name, p in mixer.named_parameters()}
    B, T, d = x.shape
    m, n = mixer.config.d_inner, mixer.config.mem_size
    xz = x @ W["fc.weight"].T
    x1, z = xz[..., :m], xz[..., m:]
    conv_w, conv_b = W["short_conv.conv1d.weight"][:, 0], W["short_conv.conv1d.bias"]   # [m, 4]
    padded = torch.cat([x1.new_zeros(B, 3, m), x1], dim=1)
    S = x.new_zeros(B, n, m)
    ys = []
    for t in range(T):
        window = padded[:, t:t + 4]                                   # inputs t−3 … t
        xt = F.silu((window * conv_w.T).sum(1) + conv_b)               # x̃_t
        q, k = (xt @ W["in_proj.weight"].T).split(n, dim=-1)
        gl, tl = (xt @ W["mem_gate_proj.weight"].T + W["mem_gate_proj.bias"]).split(n, dim=-1)
        g, tau = F.softplus(gl), torch.sigmoid(tl)
        alpha, alpha_hat = torch.exp(-tau * g), g ** tau
        beta = torch.sigmoid(x1[:, t] @ W["ch_gate_proj.0.weight"].T @ W["ch_gate_proj.1.weight"].T + W["ch_gate_proj.1.bias"])
        v = beta * x1[:, t]
        k_hat = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        S = alpha[:, :, None] * S + (alpha_hat * k_hat)[:, :, None] * v[:, None, :]
        o = n ** -0.5 * torch.einsum("bn,bnm->bm", q, S) + W["residual_weight"] * xt
        y = rms_norm(o * F.silu(z[:, t]), W["act_norm.weight"]) @ W["out_proj.weight"].T
        ys.append(y)
    return torch.stack(ys, dim=1)


def swa_from_notes(attn, x, window):
    """SW-SKA (docs/equations.md §4) with explicit loops over heads and positions."""
    c = attn.config
    H, dh = c.num_heads, c.head_dim
    W = {name: p.detach() for name, p in attn.named_parameters()}
    B, T, _ = x.shape
    q = (x @ W["q_proj.weight"].T).view(B, T, H, dh)
    k = (x @ W["k_proj.weight"].T).view(B, T, c.num_key_heads, dh)
    v = (x @ W["v_proj.weight"].T).view(B, T, c.num_value_heads, dh)

    def rotate(t):
        pos = torch.arange(T, dtype=t.dtype)[:, None]
        freq = 10000.0 ** (-torch.arange(0, dh, 2, dtype=t.dtype) / dh)
        ang = torch.cat([pos * freq, pos * freq], -1)[None, :, None]
        a, b = t[..., : dh // 2], t[..., dh // 2:]
        return t * ang.cos() + torch.cat([-b, a], -1) * ang.sin()

    q, k = rotate(q), rotate(k)
    out = torch.zeros(B, T, H, dh, dtype=x.dtype)
    for h in range(H):
        for i in range(T):
            lo = max(0, i - window + 1)
            s = (q[:, i, h, None] * k[:, lo:i + 1, h % c.num_key_heads]).sum(-1) / math.sqrt(dh)
            out[:, i, h] = (s.softmax(-1)[..., None] * v[:, lo:i + 1, h % c.num_value_heads]).sum(1)
    return out.reshape(B, T, -1) @ W["out_proj.weight"].T


def swiglu_from_notes(ffn, x):
    u, g = (x @ ffn.fc.weight.detach().T).chunk(2, -1)
    return (F.silu(g) * u) @ ffn.out_proj.weight.detach().T


def model_from_notes(model, ids):
    c = model.config
    x = model.embeddings.weight.detach()[ids]
    for layer in model.layers:
        if c.has_mixer:
            x = x + rodimus_block_from_notes(layer.mixer, rms_norm(x, layer.mixer_norm.weight.detach()))
        if c.block == "rodimus_plus":
            a = swa_from_notes(layer.attn, rms_norm(x, layer.attn_norm.weight.detach()), c.window)
            x = x + swiglu_from_notes(layer.ffn, rms_norm(x + a, layer.ffn_norm.weight.detach()))
    return rms_norm(x, model.norm_f.weight.detach()) @ model.lm_head.weight.detach().T


def tiny(block="rodimus", **kw):
    base = dict(vocab_size=61, d_model=64, n_layers=2, block=block, mem_size=8, n_heads=2)
    if block == "rodimus_plus":
        base["window"] = 4
    base.update(kw)
    return ModelConfig(**base)


def randomize(model, seed=0):
    """Official init leaves some weights at exactly 1 or 0; perturb so every term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus"])
def test_model_matches_equations_from_the_notes(block):
    torch.manual_seed(0)
    model = randomize(RodimusLM(tiny(block)).double())
    ids = torch.randint(0, 61, (2, 11))
    assert rel_err(model(ids).logits, model_from_notes(model, ids)) <= 1e-10


def test_block_matches_equations_from_the_notes():
    torch.manual_seed(1)
    model = randomize(RodimusLM(tiny(chunk_size=4)).double())
    x = torch.randn(2, 13, 64, dtype=torch.float64)
    mixer = model.layers[0].mixer
    assert rel_err(mixer(x), rodimus_block_from_notes(mixer, x)) <= 1e-10


def test_two_hop_differs_from_ordinary_residual():
    torch.manual_seed(2)
    model = randomize(RodimusLM(tiny("rodimus_plus")).double())
    ordinary = RodimusLM(tiny("rodimus_plus", two_hop=False)).double()
    ordinary.load_state_dict(model.state_dict())
    ids = torch.randint(0, 61, (1, 9))
    assert rel_err(ordinary(ids).logits, model(ids).logits) > 1e-3


# ---------------------------------------------------------------- decoding

DECODE_CASES = [
    ("rodimus", {}),
    ("rodimus_plus", {"window": 3}),          # window smaller than the sequence
    ("rodimus_plus", {"window": None}),
    ("rodimus_plus", {"attn_layout": "gqa", "n_heads": 4, "n_kv_heads": 2, "window": 5}),
    ("transformer", {}),
    ("transformer", {"attn_layout": "mqa", "window": 4}),
]


@pytest.mark.parametrize("block,kw", DECODE_CASES)
def test_step_by_step_equals_forward(block, kw):
    torch.manual_seed(3)
    model = randomize(RodimusLM(tiny(block, **kw)).double())
    ids = torch.randint(0, 61, (2, 12))
    full = model(ids).logits
    state = model.init_state(2)
    stepped = torch.stack([model.step(ids[:, t], state)[0] for t in range(12)], dim=1)
    assert rel_err(stepped, full) <= 1e-10
    assert state.position == 12


@pytest.mark.parametrize("block,kw", DECODE_CASES)
def test_forward_in_pieces_with_state_equals_one_forward(block, kw):
    """One stateful forward: prefill, a T = 1 step and further pieces (longer than the window too)
    continue the sequence exactly; the state comes back in the output and its position counts."""
    torch.manual_seed(3)
    model = randomize(RodimusLM(tiny(block, **kw)).double())
    ids = torch.randint(0, 61, (2, 17))
    full = model(ids).logits
    state = model.init_state(2)
    pieces = []
    for start, end in [(0, 5), (5, 6), (6, 13), (13, 14), (14, 17)]:
        out = model(ids[:, start:end], state=state)
        assert out.state is state and state.position == end
        pieces.append(out.logits)
    assert rel_err(torch.cat(pieces, dim=1), full) <= 1e-10
    assert model(ids).state is None


def test_forward_refuses_empty_or_misshapen_ids_and_foreign_states():
    model = RodimusLM(tiny())
    for ids in (torch.zeros(1, 0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long), torch.tensor([1, 2]),
                torch.zeros(1, 2, 3, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"input_ids must be \[B, T\] with every dim ≥ 1"):
            model(ids)
    with pytest.raises(ValueError, match=r"state holds 1 sequences, input_ids 2: use model.init_state\(2\)"):
        model(torch.ones(2, 3, dtype=torch.long), state=model.init_state(1))
    with pytest.raises(ValueError, match="state must be this model's DecodeState"):
        model(torch.ones(1, 3, dtype=torch.long), state=RodimusLM(tiny(n_layers=1)).init_state(1))
    limited = RodimusLM(tiny(max_seq_len=4))
    state = limited.init_state(1)
    limited(torch.ones(1, 3, dtype=torch.long), state=state)
    with pytest.raises(ValueError, match="sequence length 5 exceeds ModelConfig.max_seq_len = 4"):
        limited(torch.ones(1, 2, dtype=torch.long), state=state)


@pytest.mark.parametrize("gate", list(GATES))
def test_every_ablation_runs_and_decodes(gate):
    torch.manual_seed(4)
    cfg = tiny(gate=gate, n_layers=1)
    model = randomize(RodimusLM(cfg).double())
    ids = torch.randint(0, 61, (2, 9))
    out = model(ids, labels=ids)
    out.loss.backward()
    state = model.init_state(2)
    stepped = torch.stack([model.step(ids[:, t], state)[0] for t in range(9)], dim=1)
    assert rel_err(stepped, out.logits) <= 1e-10


def test_ablation_semantics():
    torch.manual_seed(5)
    gates = {}
    for gate in ("ddts", "no_tau", "no_alpha_hat", "hgrn2", "retnet", "no_decay", "mamba2"):
        mixer = RodimusLM(tiny(gate=gate, n_layers=1)).layers[0].mixer
        logits = mixer.gate_logits(torch.randn(1, 7, mixer.config.d_inner))
        gates[gate] = ddts.gates(gate, logits, mixer.config.mem_size)
    la, ah, g, tau = gates["no_tau"]
    assert torch.allclose(la, -g) and torch.allclose(ah, g) and (tau == 1).all()
    la, ah, _, _ = gates["no_alpha_hat"]
    assert (ah == 1).all() and (la < 0).all()
    la, ah, _, _ = gates["hgrn2"]
    assert torch.allclose(ah, 1 - la.exp(), rtol=1e-3, atol=1e-7)   # α̂ = 1 − α
    la, ah, _, _ = gates["retnet"]
    assert (ah == 1).all() and torch.equal(la[0, 0], la[0, -1]) and (la < 0).all()
    la, ah, _, _ = gates["no_decay"]
    assert (la == 0).all() and (ah == 1).all()
    la, ah, _, _ = gates["mamba2"]
    assert (la == la[..., :1]).all()                      # one scalar per head and token
    without_conv = RodimusLM(tiny(short_conv=False))
    assert not any("short_conv" in n for n, _ in without_conv.named_parameters())


def test_no_key_norm_changes_the_output():
    torch.manual_seed(6)
    a = RodimusLM(tiny(n_layers=1))
    b = RodimusLM(tiny(n_layers=1, key_norm=False))
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 61, (1, 8))
    assert rel_err(b(ids).logits, a(ids).logits) > 1e-4


def test_gate_logits_stay_float32_under_autocast():
    """Mixed-precision training must not round the gates' exponents to bf16."""
    mixer = RodimusLM(tiny(n_layers=1)).layers[0].mixer
    xc = torch.randn(1, 5, mixer.mem_gate_proj.in_features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mixer.in_proj(xc).dtype == torch.bfloat16     # autocast is on for ordinary layers
        logits = mixer.gate_logits(xc)
    assert logits.dtype == torch.float32
    assert rel_err(logits, mixer.gate_logits(xc)) == 0


# ---------------------------------------------------------------- official weights

def official_config(block="rodimus_plus"):
    cfg = {"block_type": block, "d_model": 256, "n_layer": 2, "vocab_size": 97, "norm_epsilon": 1e-5,
           "tie_word_embeddings": False,
           "mixer_cfg": {"mem_size": 16, "expand_ratio": 2, "d_conv": 4, "input_gate_low_rank": "auto"}}
    if block == "rodimus_plus":
        cfg["attn_cfg"] = {"num_heads": 2, "num_heads_k": 1, "num_heads_v": 2, "window_size": 8,
                           "rotary_emb_base": 10000.0, "ffn_expand_ratio": 4 / 3}
    return cfg


@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus"])
def test_load_official_round_trip(block):
    official = official_config(block)
    cfg = config_from_official(official)
    assert cfg.d_inner == 512 and cfg.low_rank == 16 and cfg.mem_size == 16
    if block == "rodimus_plus":
        assert cfg.layout == "ska" and cfg.window == 5 and cfg.ffn_dim == align8(256 * 4 / 3)
    source = randomize(RodimusLM(cfg))
    state_dict = official_state_dict(source)
    # the names are the official ones (docs/equations.md §5)
    assert "model.layers.0.mixer.inner_mixer.in_proj.weight" in state_dict
    assert "model.layers.0.mixer.fc.weight" in state_dict and "lm_head.weight" in state_dict
    assert tuple(state_dict["model.layers.0.mixer.inner_mixer.ch_gate_proj.0.weight"].shape) == (16, 512)
    if block == "rodimus_plus":
        assert tuple(state_dict["model.layers.0.attn.k_proj.weight"].shape) == (128, 256)
    loaded = load_official(state_dict, official)
    ids = torch.randint(0, 97, (2, 10))
    assert torch.equal(loaded(ids).logits, source(ids).logits)


def align8(x):
    return (int(x) + 7) // 8 * 8


def test_load_official_reports_mismatches():
    official = official_config()
    state_dict = official_state_dict(RodimusLM(config_from_official(official)))
    del state_dict["model.layers.1.ffn.fc.weight"]
    with pytest.raises(ValueError, match=r"missing tensor 'model.layers.1.ffn.fc.weight'"):
        load_official(state_dict, official)
    state_dict = official_state_dict(RodimusLM(config_from_official(official)))
    state_dict["model.norm_f.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"'model.norm_f.weight' has shape \(3,\) but the config gives"):
        load_official(state_dict, official)
    with pytest.raises(ValueError, match="official config key 'n_layer': missing"):
        load_official(state_dict, {"d_model": 256, "vocab_size": 97})


# ---------------------------------------------------------------- init, config

def test_official_initialisation():
    torch.manual_seed(7)
    cfg = ModelConfig(d_model=256, n_layers=4, block="rodimus_plus", mem_size=32)
    model = RodimusLM(cfg)
    mixer = model.layers[0].mixer
    b_g, b_tau = mixer.mem_gate_proj.bias.detach().chunk(2)
    g0 = F.softplus(b_g)
    assert g0.min() >= 1e-4 * 0.999 and g0.max() <= 0.1 * 1.001
    tau0 = torch.sigmoid(b_tau)
    assert tau0.min() >= 1 / 16 - 1e-6 and tau0.max() <= 0.9 + 1e-6
    assert (mixer.residual_weight == 1).all() and (mixer.ch_gate_proj[1].bias == 0).all()
    bound = 2 ** -2.5 * math.sqrt(6 / (cfg.d_inner + 2 * cfg.mem_size))
    assert mixer.in_proj.weight.abs().max() <= bound
    # out_proj rescaled by √(3·L) for Rodimus+; fc keeps std 0.02
    std = model.layers[0].attn.out_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(3 * 4)) < 0.002
    assert abs(model.layers[0].ffn.fc.weight.std().item() - 0.02) < 0.002


def test_tied_embeddings():
    model = RodimusLM(tiny(tie_embeddings=True))
    assert model.lm_head.weight is model.embeddings.weight


def test_cache_elements():
    cfg = tiny()
    assert cache_elements(cfg, 10) == cache_elements(cfg, 10_000) == 2 * (8 * 128 + 3 * 128)
    plus = tiny("rodimus_plus", window=4)
    assert cache_elements(plus, 100) == cache_elements(plus, 4) > cache_elements(plus, 3)
    tf = tiny("transformer")
    assert cache_elements(tf, 100) == 2 * 100 * 2 * 64


@pytest.mark.parametrize("field,value,message", [
    ("mem_size", 0, "ModelConfig.mem_size = 0 is invalid: expected an int ≥ 1"),
    ("block", "mamba", "ModelConfig.block = 'mamba' is invalid"),
    ("gate", "ddtss", "ModelConfig.gate = 'ddtss' is invalid"),
    ("window", 0, "ModelConfig.window = 0 is invalid"),
    ("n_heads", 3, "ModelConfig.n_heads = 3 is invalid: expected a divisor of d_model"),
    ("attn_layout", "gqa", "ModelConfig.n_kv_heads = None is invalid"),
    ("backend", "cuda", "ModelConfig.backend = 'cuda' is invalid"),
    ("short_conv", "yes", "ModelConfig.short_conv = 'yes' is invalid"),
])
def test_config_validation(field, value, message):
    kw = dict(block="transformer", d_model=64)
    kw[field] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**kw)


def test_config_round_trip_and_unknown_fields():
    cfg = tiny("rodimus_plus")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['mem'\]"):
        ModelConfig.from_dict({"mem": 3})
    with pytest.raises(ValueError, match="None for block 'rodimus'"):
        ModelConfig(window=8)


def test_bad_model_inputs():
    model = RodimusLM(tiny())
    with pytest.raises(TypeError, match="input_ids must be an integer"):
        model(torch.randn(1, 4))
    with pytest.raises(ValueError, match="outside \\[0, vocab_size=61\\)"):
        model(torch.tensor([[1, 61]]))
    with pytest.raises(ValueError, match="input_ids must be \\[B, T\\]"):
        model(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="labels must have the shape"):
        model(torch.tensor([[1, 2]]), labels=torch.tensor([[1]]))
    with pytest.raises(TypeError, match="config must be a rodimus_lab.ModelConfig"):
        RodimusLM({"d_model": 3})
    state = model.init_state(1)
    with pytest.raises(ValueError, match="token must be \\[B\\]"):
        model.step(torch.tensor([[1]]), state)
