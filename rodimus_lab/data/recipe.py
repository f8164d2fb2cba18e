"""``DataConfig``: a JSON-able recipe for a run's data, so a checkpoint can rebuild its test set.

    train, test, _ = build_data(DataConfig(task="mqar", preset="L64_p4"))
    train, valid, tokenizer = build_data(DataConfig(task="text", source="wikitext-103"))
    vocab_size = data_vocab_size(DataConfig(...), tokenizer)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import BOOL, Allowed, DictConfig, int_from, one_of, setting
from .mqar import MQAR_PRESETS, MQARSplit, make_mqar_splits, mqar_preset

__all__ = ["DataConfig", "build_data", "validation_split", "data_vocab_size"]

TASKS = ("mqar", "text")
_INT = int_from(1)
_TEXT = Allowed("a string", lambda v: isinstance(v, str))


@dataclass
class DataConfig(DictConfig):
    task: str = setting("mqar", "mqar (associative recall, synthetic) or text (language modelling)", one_of(TASKS))
    # MQAR: a preset name from rodimus_lab.data.mqar.MQAR_PRESETS, and optional overrides
    preset: str = setting("L64_p4", "MQAR: a preset of rodimus_lab.data.mqar.MQAR_PRESETS (L = length, p = pairs); "
                          "the fields below override it", one_of(MQAR_PRESETS))
    seq_len: int | None = setting(None, "MQAR: sequence length; None: the preset's", _INT.or_none())
    num_kv_pairs: int | None = setting(None, "MQAR: key-value pairs per example; None: the preset's", _INT.or_none())
    num_train: int | None = setting(None, "MQAR: training examples; None: the preset's", _INT.or_none())
    num_test: int | None = setting(None, "MQAR: test examples; None: the preset's", _INT.or_none())
    num_valid: int | None = setting(None, "MQAR: hold the last num_valid training examples out of training, as a "
                                    "validation set for cheap checks during training; None: none", _INT.or_none())
    vocab_size: int | None = setting(None, "MQAR: tokens (None: the preset's); text BPE: merges + 256 bytes "
                                     "(None: 8192; GPT-2 is always 50257)", _INT.or_none())
    random_non_queries: bool | None = setting(None, "MQAR filler: random tokens (true) or 0 (false); None: the preset's",
                                              BOOL.or_none())
    data_seed: int = setting(0, "seed of the generated MQAR examples", int_from(0))
    # text
    source: str = setting("wikitext-103", "text: wikitext-103 or wikitext-2 (Hugging Face hub), or a local folder/file",
                          _TEXT)
    tokenizer: str = setting("bpe", "text: bpe (trained on the train split) or gpt2 (tiktoken)", one_of(("bpe", "gpt2")))
    tokenizer_path: str | None = setting(None, "text: a saved BPE .json or a gpt2.tiktoken ranks file", _TEXT.or_none())
    block_size: int = setting(512, "text: tokens per training example", int_from(1))
    train_split: str = setting("train", "text: the split to train on (a local folder: wiki.<split>.tokens, "
                               "<split>.txt or <split>*.parquet)", _TEXT)
    eval_split: str = setting("validation", "text: the split to evaluate on", _TEXT)
    data_dir: str | None = setting(None, "tokenizer + token cache; None: $RODIMUS_LAB_DATA or ./data", _TEXT.or_none())


def _preset(cfg: DataConfig):
    fields = ("seq_len", "num_kv_pairs", "num_train", "num_test", "vocab_size", "random_non_queries")
    overrides = {k: getattr(cfg, k) for k in fields if getattr(cfg, k) is not None}
    return mqar_preset(cfg.preset, **overrides)


def _mqar_splits(cfg: DataConfig) -> tuple[MQARSplit, MQARSplit | None, MQARSplit]:
    """(train, validation or None, test): the validation examples are the last ``num_valid`` generated
    for training, so they follow the training distribution and are never trained on."""
    train, test = make_mqar_splits(_preset(cfg), seed=cfg.data_seed)
    if not cfg.num_valid:
        return train, None, test
    keep = len(train) - cfg.num_valid
    if keep < 1:
        raise ValueError(f"DataConfig.num_valid = {cfg.num_valid} leaves no training examples (the training set "
                         f"has {len(train)}): make it smaller than num_train")
    part = lambda lo, hi: MQARSplit(train.inputs[lo:hi], train.labels[lo:hi], train.seq_len, train.num_kv_pairs)
    return part(0, keep), part(keep, len(train)), test


def validation_split(cfg: DataConfig) -> MQARSplit:
    """The held-out validation examples of an MQAR recipe with ``num_valid`` (see :class:`DataConfig`)."""
    if cfg.task != "mqar" or not cfg.num_valid:
        raise ValueError("validation_split needs an MQAR recipe with num_valid ≥ 1 (DataConfig.num_valid)")
    return _mqar_splits(cfg)[1]


def build_data(cfg: DataConfig):
    """(train, eval, tokenizer): MQARSplits and None for "mqar", TokenBlocks and the tokenizer for "text"."""
    if cfg.task == "mqar":
        train, _, test = _mqar_splits(cfg)
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
