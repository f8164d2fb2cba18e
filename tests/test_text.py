"""The text pipeline offline: local files (tokens/raw/parquet), BPE caching, memory-mapped token cache."""

from pathlib import Path

import numpy as np
import pytest
import torch

from rodimus_lab.data import text
from rodimus_lab.data.text import DataUnavailableError, TokenBlocks, load_text_data, read_split

FIXTURE = Path(__file__).parent / "fixtures" / "wikitext-tiny"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_reads_wiki_tokens_splits():
    train = read_split(FIXTURE, "train")
    assert len(train) > 20 and all(line.endswith("\n") for line in train)
    assert read_split(FIXTURE, "validation") == read_split(FIXTURE, "valid")   # either name works
    assert "Homarus gammarus" in "".join(train)


def test_reads_raw_text_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = read_split(FIXTURE, "train")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train.txt").write_text("".join(lines))
    assert read_split(tmp_path / "raw", "train") == lines
    (tmp_path / "pq" / "wikitext-2-raw-v1").mkdir(parents=True)   # the hub's layout, sharded
    half = len(lines) // 2
    for i, part in enumerate((lines[:half], lines[half:])):
        pq.write_table(pa.table({"text": part}), tmp_path / "pq" / "wikitext-2-raw-v1" / f"train-0000{i}-of-00002.parquet")
    assert read_split(tmp_path / "pq", "train") == lines


def test_missing_split_names_the_files(tmp_path):
    with pytest.raises(DataUnavailableError, match="no 'train' split.*wiki.train.tokens"):
        read_split(tmp_path, "train")
    with pytest.raises(DataUnavailableError, match="neither a hub dataset"):
        read_split(tmp_path / "nowhere", "train")


def test_hub_unreachable_says_how_to_use_local_files():
    with pytest.raises(DataUnavailableError, match=r"(?s)Hugging Face hub.*rodimus-lab train --task text --source"):
        read_split("wikitext-103", "train")


def test_pipeline_blocks_and_caches(tmp_path):
    data = load_text_data(FIXTURE, vocab_size=400, block_size=32, data_dir=tmp_path)
    assert data.vocab_size <= 400
    x, y = data.train[torch.tensor([0, 2])]
    assert x.shape == y.shape == (2, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])                        # labels are the next tokens
    assert torch.equal(data.train[[1]][0][0, 0:1], data.train[[0]][1][0, -1:])   # blocks are contiguous
    text_back = data.tokenizer.decode(data.train.tokens[:200].tolist())
    assert text_back == "".join(read_split(FIXTURE, "train"))[:len(text_back)]   # byte-level: lossless
    assert isinstance(data.train.tokens, np.memmap)

    tokenizers = list((tmp_path / "tokenizers").iterdir())
    caches = sorted((tmp_path / "cache").iterdir())
    assert len(tokenizers) == 1 and len(caches) == 2
    stamps = [p.stat().st_mtime_ns for p in tokenizers + caches]
    again = load_text_data(FIXTURE, vocab_size=400, block_size=32, data_dir=tmp_path)
    assert [p.stat().st_mtime_ns for p in tokenizers + caches] == stamps     # nothing retrained or rewritten
    assert np.array_equal(again.eval.tokens, data.eval.tokens)


def test_tokenizer_cache_is_keyed_by_its_inputs(tmp_path):
    lines = read_split(FIXTURE, "train")
    a = text.train_bpe(lines, 400, tmp_path)
    b = text.train_bpe(lines, 300, tmp_path)
    c = text.train_bpe(lines[:-5], 400, tmp_path)
    assert len({a.key, b.key, c.key}) == 3
    assert len(list((tmp_path / "tokenizers").iterdir())) == 3
    assert text.train_bpe(lines, 400, tmp_path).encode("the lobster") == a.encode("the lobster")


def test_bad_inputs():
    with pytest.raises(ValueError, match="vocab_size must be an int ≥ 257"):
        text.train_bpe(["a b c\n"], 100)
    with pytest.raises(ValueError, match="unknown tokenizer 'word'"):
        text.get_tokenizer("word", ["x\n"])
    with pytest.raises(ValueError, match="fewer than block_size"):
        TokenBlocks(np.zeros(10, dtype=np.uint16), 16)
    with pytest.raises(DataUnavailableError, match="ranks file .* does not exist"):
        text.gpt2_tokenizer("/nonexistent/gpt2.tiktoken")

