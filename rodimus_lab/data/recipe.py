"""``DataConfig``: a JSON-able recipe for a run's data, so a checkpoint can rebuild its test set.

    train, test, _ = build_data(DataConfig(task="mqar", preset="L64_p4"))
    train, valid, tokenizer = build_data(DataConfig(task="text", source="wikitext-103"))
    vocab_size = data_vocab_size(DataConfig(...), tokenizer)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DictConfig
from .mqar import make_mqar_splits, mqar_preset

__all__ = ["DataConfig", "build_data", "data_vocab_size"]

TASKS = ("mqar", "text")


@dataclass
class DataConfig(DictConfig):
    task: str = "mqar"                 # "mqar" or "text"
    # MQAR: a preset name from rodimus_lab.data.mqar.MQAR_PRESETS, and optional overrides
    preset: str = "L64_p4"
    seq_len: int | None = None
    num_kv_pairs: int | None = None
    num_train: int | None = None
    num_test: int | None = None
    vocab_size: int | None = None      # MQAR: the preset's; text BPE: 8192 (GPT-2: always 50257)
    random_non_queries: bool | None = None   # MQAR filler: random tokens (True) or 0 (False); None: the preset's
    data_seed: int = 0
    # text
    source: str = "wikitext-103"       # "wikitext-103", "wikitext-2" (hub) or a local folder/file
    tokenizer: str = "bpe"             # "bpe" or "gpt2"
    tokenizer_path: str | None = None  # a saved BPE .json, or a gpt2.tiktoken ranks file
    block_size: int = 512
    train_split: str = "train"
    eval_split: str = "validation"
    data_dir: str | None = None        # tokenizer + token cache; None: $RODIMUS_LAB_DATA or ./data

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"DataConfig.task = {self.task!r} is invalid: expected one of {TASKS}")


def _preset(cfg: DataConfig):
    fields = ("seq_len", "num_kv_pairs", "num_train", "num_test", "vocab_size", "random_non_queries")
    overrides = {k: getattr(cfg, k) for k in fields if getattr(cfg, k) is not None}
    return mqar_preset(cfg.preset, **overrides)


def build_data(cfg: DataConfig):
    """(train, eval, tokenizer): MQARSplits and None for "mqar", TokenBlocks and the tokenizer for "text"."""
    if cfg.task == "mqar":
        train, test = make_mqar_splits(_preset(cfg), seed=cfg.data_seed)
        return train, test, None
    from .text import load_text_data

    data = load_text_data(cfg.source, tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size or 8192,
                          block_size=cfg.block_size, train_split=cfg.train_split, eval_split=cfg.eval_split,
                          tokenizer_path=cfg.tokenizer_path, data_dir=cfg.data_dir)
    return data.train, data.eval, data.tokenizer


def data_vocab_size(cfg: DataConfig, tokenizer=None) -> int:
    """The vocabulary a model needs for this data (the tokenizer's, once a text run has one)."""
    if cfg.task == "mqar":
        return _preset(cfg).vocab_size
    if tokenizer is not None:
        return tokenizer.vocab_size
    return 50257 if cfg.tokenizer == "gpt2" else (cfg.vocab_size or 8192)
