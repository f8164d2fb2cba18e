"""Parity with the official Rodimus code (codefuse-ai/rodimus), from fixtures it produced.

tests/fixtures/official/ holds, per case, the official config.json, the official state dict and what
the official model computed from them (tests/fixtures/official/README.md says how): logits of a
[2, 16] batch, and a greedy continuation of its first 3 tokens by 10 tokens (re-running the official
forward for every token). Here our model, built by ``load_official``, must give the same logits and,
through its decoding path (prompt prefill, then one token at a time from the state), the same tokens
and per-step logits.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rodimus_lab import config_from_official, load_official
from rodimus_lab.generate import generate
from rodimus_lab.official import OfficialConfigError, official_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "official"
CASES = json.loads((FIXTURES / "cases.json").read_text())["cases"]
TOL = 1e-5   # relative (Frobenius) error, float32 on both sides


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def official_case(name):
    config = json.loads((FIXTURES / name / "config.json").read_text())
    weights = load_file(str(FIXTURES / CASES[name]["weights"] / "model.safetensors"))
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    return config, weights, expected


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    config, weights, expected = official_case(request.param)
    model = load_official(weights, config).eval()
    return request.param, model, expected


def test_cases_cover_the_four_layouts_and_the_four_keys():
    assert set(CASES) == {"rodimus", "ska", "mha", "gqa", "scale_embedding", "partial_rope", "interleaved_rope", "xpos"}
    layouts = {name: config_from_official(official_case(name)[0]).layout for name in ("ska", "mha", "gqa")}
    assert layouts == {"ska": "ska", "mha": "mha", "gqa": "gqa"}
    assert config_from_official(official_case("gqa")[0]).num_key_heads == 2


def test_logits_equal_the_official_forward(case):
    name, model, expected = case
    with torch.no_grad():
        logits = model(expected["input_ids"]).logits
    assert rel_err(logits, expected["logits"]) <= TOL, name


def test_greedy_decoding_equals_the_official_forward(case):
    name, model, expected = case
    new = expected["greedy_step_logits"].shape[1]
    prompt_len = expected["greedy_ids"].shape[1] - new
    prompt = expected["greedy_ids"][:, :prompt_len]
    tokens = generate(model, prompt, new, temperature=0)
    assert torch.equal(tokens, expected["greedy_ids"]), name
    # the decoding path's logits, token by token, against the official forward's last-position logits
    state = model.init_state(prompt.shape[0])
    with torch.no_grad():
        for t in range(prompt_len - 1):
            model.step(expected["greedy_ids"][:, t], state)
        for i in range(new):
            logits, state = model.step(expected["greedy_ids"][:, prompt_len - 1 + i], state)
            assert rel_err(logits, expected["greedy_step_logits"][:, i]) <= TOL, (name, i)


@pytest.mark.parametrize("name", ["gqa", "scale_embedding", "partial_rope", "interleaved_rope", "xpos"])
def test_each_case_differs_from_its_plain_counterpart(name):
    """The fixtures can catch a regression: the GQA pairing or each key, dropped, moves the logits."""
    config, weights, expected = official_case(name)
    model = load_official(weights, config)
    cfg = model.config
    plain = {
        "gqa": dict(n_kv_heads=None, attn_layout="mha"),
        "scale_embedding": dict(embed_scale=1.0),
        "partial_rope": dict(rope_dim=None),
        "interleaved_rope": dict(rope_interleaved=False),
        "xpos": dict(xpos_scale_base=None, max_seq_len=None),
    }[name]
    if name == "gqa":   # the other pairing (j // (H/Hk)) is MHA with each kv head repeated in place
        H, Hk, dh = cfg.num_heads, cfg.num_key_heads, cfg.head_dim
        for proj in ("k_proj", "v_proj"):
            for layer in range(cfg.n_layers):
                key = f"model.layers.{layer}.attn.{proj}.weight"
                weights[key] = weights[key].view(Hk, dh, -1).repeat_interleave(H // Hk, 0).reshape(H * dh, -1)
    other = load_official(weights, cfg.__class__(**{**cfg.to_dict(), **plain}))
    with torch.no_grad():
        assert rel_err(other(expected["input_ids"]).logits, expected["logits"]) > 1e-2


def test_official_names_round_trip():
    config, weights, _ = official_case("ska")
    model = load_official(weights, config)
    assert official_state_dict(model).keys() == weights.keys()


# ------------------------------------------------------------------- config keys

def config_with(**change):
    config = json.loads((FIXTURES / "ska" / "config.json").read_text())
    for key, value in change.items():
        section, _, sub = key.partition("__")
        if sub:
            config[section] = dict(config[section], **{sub: value})
        else:
            config[key] = value
    return config


def test_key_mapping():
    cfg = config_from_official(config_with(use_scale_embedding=True, attn_cfg__rotary_emb_dim=8,
                                           attn_cfg__rotary_emb_interleaved=True, attn_cfg__rotary_emb_scale_base=32))
    assert cfg.embed_scale == math.sqrt(16) and cfg.rope_dim == 8 and cfg.rope_interleaved
    assert cfg.xpos_scale_base == 32 and cfg.max_seq_len == 64            # max_position_embeddings
    assert config_from_official(config_with(attn_cfg__rotary_emb_dim=0)).rope_dim == 0        # no RoPE
    assert config_from_official(config_with(attn_cfg__rotary_emb_dim=-1)).rope_dim is None    # the whole head
    assert config_from_official(config_with(attn_cfg__window_size=4096)).window == 2049


@pytest.mark.parametrize("change,key", [
    (dict(use_norm_embedding=True), "use_norm_embedding"),
    (dict(block_type="mamba"), "block_type"),
    (dict(attn_cfg__softmax_scale="norm"), "attn_cfg.softmax_scale"),
    (dict(attn_cfg__rotary_emb_dim=7), "attn_cfg.rotary_emb_dim"),
    (dict(attn_cfg__rotary_emb_dim=32), "attn_cfg.rotary_emb_dim"),
    (dict(attn_cfg__rotary_emb_scale_base=32, max_position_embeddings=None), "attn_cfg.rotary_emb_scale_base"),
    (dict(attn_cfg__num_heads_k=2, attn_cfg__num_heads_v=4), "attn_cfg.num_heads_k"),
    (dict(attn_cfg__rotary_scaling=2.0), "attn_cfg.rotary_scaling"),
    (dict(mixer_cfg__chunk_size=64), "mixer_cfg.chunk_size"),
    (dict(mixer_cfg__normalize_epsilon=1e-2), "mixer_cfg.normalize_epsilon"),
])
def test_keys_that_would_change_the_model_are_refused_by_name(change, key):
    with pytest.raises(OfficialConfigError, match=rf"official config key '{key}'") as info:
        config_from_official(config_with(**change))
    assert info.value.key == key


def test_missing_size_key_is_named():
    config = config_with()
    del config["n_layer"]
    with pytest.raises(OfficialConfigError, match=r"official config key 'n_layer': missing; is this an official"):
        config_from_official(config)


def test_keys_without_effect_are_accepted():
    cfg = config_from_official(config_with(dropout=0.1, use_fast_path=False, residual_in_fp32=False,
                                           transformers_version="4.42.0", architectures=["RodimusForCausalLM"],
                                           mixer_cfg__mode="chunk", mixer_cfg__post_norm_epsilon=1e-6,
                                           attn_cfg__softmax_scale=0.5))
    assert cfg == config_from_official(config_with())


def test_missing_and_mismatched_tensors_are_named():
    config, weights, _ = official_case("ska")
    bad = dict(weights)
    bad.pop("model.layers.1.attn.k_proj.weight")
    with pytest.raises(ValueError, match=r"missing tensor 'model.layers.1.attn.k_proj.weight'"):
        load_official(bad, config)
    bad = dict(weights, **{"model.layers.0.mixer.inner_mixer.in_proj.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"'model.layers.0.mixer.inner_mixer.in_proj.weight' has shape \(3, 3\)"):
        load_official(bad, config)
    bad = dict(weights, **{"model.layers.0.extra.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected tensor 'model.layers.0.extra.weight'"):
        load_official(bad, config)


# The released configs as published on the Hugging Face hub (huggingface.co/codefuse-ai/Rodimus-Plus-Coder-1.6B-Base
# at 73e6fb7, huggingface.co/codefuse-admin/rodimus_1B4_base_20241001): every key is mapped or harmless.
RELEASED_CONFIGS = {
    "Rodimus-Plus-Coder-1.6B-Base": {
        "activation_dropout": 0.0, "architectures": ["RodimusForCausalLM"], "attention_dropout": 0.0,
        "attn_cfg": {"ffn_expand_ratio": 1.3333333333333333, "num_heads": 16, "num_heads_k": 1, "num_heads_v": 16,
                     "rotary_emb_dim": -1, "rotary_emb_scale_base": None, "window_size": 4096},
        "bos_token_id": 126080, "d_model": 2048, "dropout": 0.0, "eos_token_id": 126081, "initializer_range": 0.02,
        "max_position_embeddings": 4096,
        "mixer_cfg": {"expand_ratio": 2.0, "input_gate_low_rank": "auto", "mem_size": 64, "mode": "fused_chunk",
                      "normalize_epsilon": 1e-05},
        "model_type": "rodimus", "n_layer": 24, "norm_epsilon": 1e-05, "rescale_prenorm_residual": True,
        "residual_in_fp32": True, "tie_word_embeddings": True, "torch_dtype": "float32", "transformers_version": "4.42.0",
        "use_cache": True, "use_fast_path": True, "use_fused_cross_entropy": True, "use_norm_embedding": False,
        "use_scale_embedding": False, "vocab_size": 126464, "block_type": "rodimus_plus",
        "auto_map": {"AutoConfig": "configuration_rodimus.RodimusConfig",
                     "AutoModel": "modeling_rodimus.RodimusForCausalLM",
                     "AutoModelForCausalLM": "modeling_rodimus.RodimusForCausalLM"},
    },
    "rodimus_1B4_base_20241001": {
        "activation_dropout": 0.0, "attention_dropout": 0.0,
        "attn_cfg": {"ffn_expand_ratio": 1.3333333333333333, "num_heads": None, "num_heads_k": None,
                     "num_heads_v": None, "rotary_emb_dim": -1, "rotary_emb_scale_base": None, "window_size": 128},
        "d_model": 2048, "dropout": 0.0, "initializer_range": 0.02, "max_position_embeddings": 2048,
        "mixer_cfg": {"expand_ratio": 2.0, "input_gate_low_rank": "auto", "mem_size": 64, "mode": "fused_chunk"},
        "model_type": "rodimus", "n_layer": 48, "norm_epsilon": 1e-05, "residual_in_fp32": True,
        "tie_word_embeddings": True, "transformers_version": "4.37.2", "use_cache": True, "use_fast_path": True,
        "vocab_size": 126464, "eos_token_id": 126081, "bos_token_id": 126080, "pad_token_id": None,
        "block_type": "rodimus", "torch_dtype": "float16", "architectures": ["RodimusForCausalLM"],
    },
}


def test_released_configs_map():
    plus = config_from_official(RELEASED_CONFIGS["Rodimus-Plus-Coder-1.6B-Base"])
    assert (plus.block, plus.n_layers, plus.layout, plus.num_heads, plus.head_dim, plus.window) == \
        ("rodimus_plus", 24, "ska", 16, 128, 2049)
    assert plus.tie_embeddings and plus.rope_dim is None and plus.xpos_scale_base is None and plus.embed_scale == 1.0
    assert (plus.d_inner, plus.low_rank, plus.ffn_dim) == (4096, 32, 2736)
    base = config_from_official(RELEASED_CONFIGS["rodimus_1B4_base_20241001"])
    assert (base.block, base.n_layers, base.mem_size, base.window) == ("rodimus", 48, 64, None)
