"""Released checkpoints: snapshot folders in the official Hugging Face format (no network).

The tests write small snapshot folders the way the official release lays them out — the official
config.json, safetensors shards with model.safetensors.index.json, a tokenizer.json — from the
official-parity fixtures, so a loaded model must reproduce what the official code computed.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import rodimus_lab
from rodimus_lab import ModelConfig, RodimusLM
from rodimus_lab.official import config_from_official, config_to_official
from rodimus_lab.pretrained import PretrainedError, from_pretrained, load_tokenizer, save_pretrained

FIXTURES = Path(__file__).parent / "fixtures" / "official"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def write_tokenizer(path: Path, vocab_size: int) -> None:
    """A word-level tokenizer.json: word i is "w{i}"."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))


@pytest.fixture
def snapshot(tmp_path) -> Path:
    """The SKA fixture as a released snapshot: config.json, two shards + index, tokenizer.json."""
    folder = tmp_path / "Rodimus-Plus-tiny"
    folder.mkdir()
    shutil.copy(FIXTURES / "ska" / "config.json", folder / "config.json")
    weights = load_file(str(FIXTURES / "ska" / "model.safetensors"))
    names = sorted(weights)
    weight_map = {name: SHARDS[i * 2 // len(names)] for i, name in enumerate(names)}
    for shard in SHARDS:
        save_file({n: weights[n] for n in names if weight_map[n] == shard}, str(folder / shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    write_tokenizer(folder / "tokenizer.json", 61)
    return folder


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def test_sharded_snapshot_reproduces_the_official_logits(snapshot):
    model = rodimus_lab.from_pretrained(snapshot)
    assert isinstance(model, RodimusLM) and not model.training
    expected = load_file(str(FIXTURES / "ska" / "expected.safetensors"))
    with torch.no_grad():
        assert rel_err(model(expected["input_ids"]).logits, expected["logits"]) <= 1e-5
    tokenizer = load_tokenizer(snapshot)
    assert tokenizer.vocab_size == 61 and tokenizer.encode("w3 w60 w7") == [3, 60, 7]
    assert tokenizer.decode([3, 60, 7]) == "w3 w60 w7"


def test_dtype_casts_the_weights(snapshot):
    model = from_pretrained(snapshot, dtype=torch.bfloat16)
    assert model.embeddings.weight.dtype == torch.bfloat16


def test_missing_shard_names_the_file_and_a_key(snapshot):
    (snapshot / SHARDS[1]).unlink()
    with pytest.raises(PretrainedError, match=rf"{SHARDS[1]}: missing shard \(the index lists it for 'model\."):
        from_pretrained(snapshot)


def test_shape_mismatch_names_the_file_and_the_key(snapshot):
    shard = load_file(str(snapshot / SHARDS[0]))
    name = sorted(shard)[0]
    shard[name] = torch.zeros(3, 5)
    save_file(shard, str(snapshot / SHARDS[0]))
    with pytest.raises(PretrainedError, match=rf"'{name}' in {SHARDS[0]} has shape \(3, 5\) but the config gives"):
        from_pretrained(snapshot)


def test_unknown_key_names_the_file_and_the_key(snapshot):
    shard = load_file(str(snapshot / SHARDS[1]))
    shard["model.layers.0.attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(shard, str(snapshot / SHARDS[1]))
    with pytest.raises(PretrainedError, match=rf"unexpected tensor 'model.layers.0.attn.rotary_emb.inv_freq' in {SHARDS[1]}"):
        from_pretrained(snapshot)


def test_index_and_shard_disagree(snapshot):
    index = json.loads((snapshot / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm_f.weight"] = SHARDS[0] if index["weight_map"]["model.norm_f.weight"] == SHARDS[1] else SHARDS[1]
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(PretrainedError, match=r"has no tensor 'model.norm_f.weight', which model.safetensors.index.json puts there"):
        from_pretrained(snapshot)


def test_config_problems_name_config_json_and_the_key(snapshot):
    config = json.loads((snapshot / "config.json").read_text())
    config["attn_cfg"]["softmax_scale"] = "norm"
    (snapshot / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedError, match=r"config.json: official config key 'attn_cfg.softmax_scale'"):
        from_pretrained(snapshot)
    (snapshot / "config.json").unlink()
    with pytest.raises(PretrainedError, match=r"config.json: missing"):
        from_pretrained(snapshot)


def test_no_weights_at_all(snapshot):
    for shard in SHARDS:
        (snapshot / shard).unlink()
    (snapshot / "model.safetensors.index.json").unlink()
    with pytest.raises(PretrainedError, match="no weights"):
        from_pretrained(snapshot)


def test_single_file_and_pytorch_bin_snapshots(snapshot, tmp_path):
    weights = load_file(str(FIXTURES / "ska" / "model.safetensors"))
    expected = from_pretrained(snapshot).state_dict()
    for file, write in (("model.safetensors", lambda p: save_file(weights, str(p))),
                        ("pytorch_model.bin", lambda p: torch.save(weights, p))):
        folder = tmp_path / file
        folder.mkdir()
        shutil.copy(snapshot / "config.json", folder / "config.json")
        write(folder / file)
        loaded = from_pretrained(folder).state_dict()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_repo_id_offline_fails_fast_with_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedError, match=r"codefuse-ai/Rodimus-Plus-Coder-1.6B-Base is not in the Hugging Face "
                                              r"cache and HF_HUB_OFFLINE is set: download it once .*hf download"):
        from_pretrained("codefuse-ai/Rodimus-Plus-Coder-1.6B-Base", cache_dir=tmp_path)


def test_repo_id_from_the_cache(snapshot, monkeypatch, tmp_path):
    """A snapshot in the Hugging Face cache layout loads offline by its repo id."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "models--codefuse-ai--Rodimus-Plus-tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(snapshot, repo / "snapshots" / commit)
    model = from_pretrained("codefuse-ai/Rodimus-Plus-tiny", cache_dir=tmp_path)
    assert model.config.layout == "ska"


def test_not_a_folder_nor_a_repo_id(tmp_path):
    with pytest.raises(PretrainedError, match="not a folder, and not a Hugging Face repo id"):
        from_pretrained(tmp_path / "nowhere" / "at" / "all")


@pytest.mark.parametrize("kw", [
    dict(block="rodimus", tie_embeddings=True),
    dict(block="rodimus_plus", n_heads=4, attn_layout="ska", window=5, rope_dim=8, embed_scale=4.0, ffn_expand=4 / 3),
    dict(block="rodimus_plus", n_heads=4, attn_layout="gqa", n_kv_heads=2, rope_interleaved=True,
         xpos_scale_base=32.0, max_seq_len=64, ffn_expand=1.5),
])
def test_save_pretrained_round_trip(kw, tmp_path):
    cfg = ModelConfig(d_model=64, n_layers=2, vocab_size=61, mem_size=16, **kw)
    assert config_from_official(config_to_official(cfg)) == cfg
    torch.manual_seed(0)
    model = RodimusLM(cfg).eval()
    write_tokenizer(tmp_path / "tok.json", 61)
    folder = save_pretrained(model, tmp_path / "snap", shards=3, tokenizer=tmp_path / "tok.json")
    assert len(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    loaded = from_pretrained(folder)
    ids = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert load_tokenizer(folder).vocab_size == 61


def test_save_pretrained_refuses_what_the_official_code_cannot_express(tmp_path):
    with pytest.raises(ValueError, match=r"ModelConfig.gate = 'mamba2' has no official equivalent"):
        save_pretrained(RodimusLM(ModelConfig(d_model=64, gate="mamba2")), tmp_path)


def test_gate_explorer_reads_a_loaded_checkpoint(snapshot):
    pytest.importorskip("ipywidgets")
    from rodimus_lab.widgets import GateExplorer

    explorer = GateExplorer(from_pretrained(snapshot), {"words": "w1 w5 w9 w2 w7"}, tokenizer=load_tokenizer(snapshot))
    assert explorer.token.max == 4 and explorer.layer.options == (0, 1)


def test_cli_generate_from_a_snapshot_folder(snapshot, capsys, monkeypatch):
    from rodimus_lab.cli import main

    args = ["generate", "--pretrained", str(snapshot), "--prompt", "w1 w5 w9", "--max-new-tokens", "4", "--temperature", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out.split()
    assert out[:3] == ["w1", "w5", "w9"] and len(out) == 7
    expected = generate_greedy(from_pretrained(snapshot), [1, 5, 9], 4)
    assert out[3:] == [f"w{i}" for i in expected]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["generate", "--pretrained", "codefuse-ai/not-cached-here", "--prompt-ids", "1"]) == 2
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in capsys.readouterr().err


def generate_greedy(model, prompt, new):
    from rodimus_lab.generate import generate

    return generate(model, torch.tensor([prompt]), new, temperature=0)[0, len(prompt):].tolist()
