"""WikiText for language modelling: read → tokenize → cache as a memory-mapped array → blocks.

Sources (``source`` argument):
- ``"wikitext-103"`` / ``"wikitext-2"``: the Hugging Face hub (``Salesforce/wikitext``, the ``*-raw-v1``
  configs) through ``datasets`` — needs a connection the first time (then the HF cache).
- a local folder or file: ``wiki.{train,valid,test}.tokens`` (the original release), raw text
  (``{split}.txt``, ``wiki.{split}.raw``) or parquet (``{split}*.parquet``, as on the hub).

Tokenizers (``tokenizer`` argument):
- ``"bpe"``: a byte-level BPE trained with the ``tokenizers`` library on the training split, cached
  in ``<data_dir>/tokenizers/`` under a hash of (training text, vocab size) — trained once.
- ``"gpt2"``: GPT-2's BPE through ``tiktoken`` (downloaded by tiktoken on a connected machine, or
  built from a local ``gpt2.tiktoken`` ranks file passed as ``tokenizer_path``).

Token ids are cached in ``<data_dir>/cache/`` as ``.npy`` files opened with ``mmap_mode="r"``, keyed by
a hash of (text, tokenizer), so a second run starts in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..files import atomic_path

__all__ = [
    "DataUnavailableError", "read_split", "train_bpe", "load_bpe", "gpt2_tokenizer", "get_tokenizer",
    "tokenize_to_cache", "TokenBlocks", "TextData", "load_text_data", "default_data_dir", "HUB_CONFIGS",
]

HUB_DATASET = "Salesforce/wikitext"
HUB_CONFIGS = {"wikitext-103": "wikitext-103-raw-v1", "wikitext-2": "wikitext-2-raw-v1"}
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid"), "valid": ("valid", "validation"),
                 "test": ("test",)}


class DataUnavailableError(RuntimeError):
    """The data cannot be read here (no hub connection, or files missing); the message says what to do."""


def default_data_dir() -> Path:
    """Where tokenizers and token caches go: ``$RODIMUS_LAB_DATA`` or ``./data``."""
    return Path(os.environ.get("RODIMUS_LAB_DATA", "data"))


# ----------------------------------------------------------------------------- reading

def _local_command(source: str) -> str:
    return (f"rodimus-lab train --task text --source /path/to/{source} "
            "(a folder holding wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens — or {split}.txt / "
            "{split}*.parquet files)")


def _read_hub(source: str, split: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise DataUnavailableError(
            f"reading {source!r} from the Hugging Face hub needs the `datasets` package "
            f"(pip install 'rodimus-lab[data]'), or use local files: {_local_command(source)}") from None
    hub_split = "validation" if split in ("valid", "validation") else split
    try:
        with _offline_unless_reachable():
            ds = datasets.load_dataset(HUB_DATASET, HUB_CONFIGS[source], split=hub_split)
    except Exception as e:  # offline mode, DNS, HTTP: datasets raises many types; all mean "not reachable"
        raise DataUnavailableError(
            f"could not load {HUB_DATASET} ({HUB_CONFIGS[source]}, split {hub_split!r}) from the Hugging Face hub "
            f"and it is not in the local HF cache ({type(e).__name__}: {e}). Offline, use local files: "
            f"{_local_command(source)}") from None
    return list(ds["text"])


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the hub's host (``$HF_ENDPOINT``) opens within ``timeout`` seconds.
    The name lookup has no timeout of its own, so the attempt runs in a daemon thread we stop waiting for."""
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    opened = threading.Event()

    def connect():
        try:
            socket.create_connection(address, timeout).close()
            opened.set()
        except OSError:
            pass

    threading.Thread(target=connect, daemon=True).start()
    return opened.wait(timeout)


@contextlib.contextmanager
def _offline_unless_reachable():
    """Offline mode while the hub cannot be reached: ``datasets`` then reads its cache at once instead
    of retrying for half a minute (with the hub's offline switches already set this is a no-op)."""
    import datasets
    import huggingface_hub.constants as hub

    if datasets.config.HF_HUB_OFFLINE or _hub_reachable():
        yield
        return
    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def _find_local(folder: Path, split: str) -> list[Path]:
    """The file(s) of ``split`` in ``folder`` (several for sharded parquet, e.g. train-00000-of-00002)."""
    tried = []
    for alias in SPLIT_ALIASES.get(split, (split,)):
        for name in (f"wiki.{alias}.tokens", f"wiki.{alias}.raw", f"{alias}.txt"):
            tried.append(name)
            if (folder / name).is_file():
                return [folder / name]
        tried.append(f"{alias}*.parquet")
        parquet = sorted(folder.glob(f"{alias}*.parquet")) or sorted(folder.glob(f"*/{alias}*.parquet"))
        if parquet:
            return parquet
    raise DataUnavailableError(f"no {split!r} split in {folder}: looked for {', '.join(tried)}; name the split "
                               f"your files have with --train-split / --eval-split (DataConfig.train_split, "
                               f"eval_split)")


def _read_local(path: Path, split: str) -> list[str]:
    files = _find_local(path, split) if path.is_dir() else [path]
    if files[0].suffix == ".parquet":
        import pyarrow.parquet as pq
        return [t for f in files for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
    with open(files[0], encoding="utf-8") as f:
        return f.readlines()


def read_split(source: str | os.PathLike, split: str) -> list[str]:
    """The lines of one split (each keeps its newline), from the hub or from local files."""
    if isinstance(source, str) and source in HUB_CONFIGS:
        return _read_hub(source, split)
    path = Path(source)
    if not path.exists():
        raise DataUnavailableError(
            f"text source {str(source)!r} is neither a hub dataset ({sorted(HUB_CONFIGS)}) nor an existing path")
    return _read_local(path, split)


def _hash_lines(lines: list[str], *extra) -> str:
    h = hashlib.sha256()
    for x in extra:
        h.update(repr(x).encode() + b"\0")
    for line in lines:
        h.update(line.encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- tokenizers

class BPETokenizer:
    """A ``tokenizers`` byte-level BPE behind a small interface: encode, decode, vocab_size, key, path."""

    name = "bpe"

    def __init__(self, tokenizer, key: str, path: Path):
        self._tok, self.key, self.path = tokenizer, key, path

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, lines: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(lines)]

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids))


def train_bpe(lines: list[str], vocab_size: int = 8192, data_dir: str | os.PathLike | None = None) -> BPETokenizer:
    """Train (or load from the cache) a byte-level BPE on ``lines``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not isinstance(vocab_size, int) or vocab_size < 257:
        raise ValueError(f"BPE vocab_size must be an int ≥ 257 (256 bytes + merges), got {vocab_size!r}")
    key = f"bpe-{vocab_size}-{_hash_lines(lines, 'bytelevel-bpe/1', vocab_size)}"
    path = Path(data_dir or default_data_dir()) / "tokenizers" / f"{key}.json"
    if path.exists():
        return load_bpe(path)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return BPETokenizer(tok, key, path)


def load_bpe(path: str | os.PathLike) -> BPETokenizer:
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise DataUnavailableError(f"tokenizer file {path} does not exist")
    return BPETokenizer(Tokenizer.from_file(str(path)), path.stem, path)


class TiktokenTokenizer:
    name = "gpt2"

    def __init__(self, encoding, key: str, path: Path | None = None):
        self._enc, self.key, self.path = encoding, key, path

    @property
    def vocab_size(self) -> int:
        return self._enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, lines: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(lines)

    def decode(self, ids) -> str:
        return self._enc.decode(list(ids))


def gpt2_tokenizer(ranks_path: str | os.PathLike | None = None) -> TiktokenTokenizer:
    """GPT-2's BPE (50 257 ids). Without ``ranks_path`` tiktoken fetches/caches the table itself;
    offline, pass a ``gpt2.tiktoken`` ranks file."""
    try:
        import tiktoken
    except ImportError:
        raise DataUnavailableError("the GPT-2 tokenizer needs `tiktoken` (pip install 'rodimus-lab[data]'); "
                                   "or use tokenizer='bpe'") from None
    if ranks_path is None:
        try:
            return TiktokenTokenizer(tiktoken.get_encoding("gpt2"), "gpt2")
        except Exception as e:  # network errors of many kinds
            raise DataUnavailableError(
                f"tiktoken could not fetch the GPT-2 table ({type(e).__name__}: {e}); offline, pass a local "
                "ranks file: --tokenizer gpt2 --tokenizer-path /path/to/gpt2.tiktoken, or use --tokenizer bpe") from None
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    if not Path(ranks_path).is_file():
        raise DataUnavailableError(f"GPT-2 ranks file {ranks_path} does not exist")
    enc = tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(str(ranks_path)),
                            special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)
    return TiktokenTokenizer(enc, "gpt2", Path(ranks_path))


def get_tokenizer(name: str, train_lines: list[str] | None = None, *, vocab_size: int = 8192,
                  tokenizer_path: str | os.PathLike | None = None, data_dir=None):
    """"bpe" (trained on ``train_lines``, or loaded from ``tokenizer_path``) or "gpt2"."""
    if name == "gpt2":
        return gpt2_tokenizer(tokenizer_path)
    if name == "bpe":
        if tokenizer_path is not None:
            return load_bpe(tokenizer_path)
        if train_lines is None:
            raise ValueError("tokenizer 'bpe' needs train_lines to train on (or tokenizer_path of a saved one)")
        return train_bpe(train_lines, vocab_size, data_dir)
    raise ValueError(f"unknown tokenizer {name!r}; choose 'bpe' or 'gpt2'")


# ----------------------------------------------------------------------------- token cache

def tokenize_to_cache(lines: list[str], tokenizer, data_dir=None, *, chunk_lines: int = 10_000) -> np.ndarray:
    """All tokens of ``lines`` as a read-only memory-mapped array (uint16 when the vocab fits)."""
    path = Path(data_dir or default_data_dir()) / "cache" / f"tokens-{tokenizer.key}-{_hash_lines(lines)}.npy"
    if not path.exists():
        dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
        parts = []
        for start in tqdm(range(0, len(lines), chunk_lines), desc="tokenize", leave=False, unit="chunk"):
            ids = tokenizer.encode_batch(lines[start:start + chunk_lines])
            parts.append(np.fromiter((t for seq in ids for t in seq), dtype=dtype))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.save(tmp, np.concatenate(parts) if parts else np.zeros(0, dtype=dtype))
    return np.load(path, mmap_mode="r")


class TokenBlocks:
    """Non-overlapping blocks of ``block_size`` tokens: example i is tokens[iT : iT+T] with the
    next-token labels tokens[iT+1 : iT+T+1] (the Trainer's example-set protocol)."""

    def __init__(self, tokens: np.ndarray, block_size: int):
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an int ≥ 1, got {block_size!r}")
        if len(tokens) < block_size + 1:
            raise ValueError(f"the corpus has {len(tokens)} tokens, fewer than block_size + 1 = {block_size + 1}")
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(index).reshape(-1).numpy()
        rows = index[:, None] * self.block_size + np.arange(self.block_size + 1)
        chunk = torch.from_numpy(self.tokens[rows].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]


@dataclass
class TextData:
    train: TokenBlocks
    eval: TokenBlocks
    tokenizer: object

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def load_text_data(source: str | os.PathLike = "wikitext-103", *, tokenizer: str = "bpe", vocab_size: int = 8192,
                   block_size: int = 512, train_split: str = "train", eval_split: str = "validation",
                   tokenizer_path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> TextData:
    """Train/eval token blocks and the tokenizer, everything cached under ``data_dir``.

    Offline on these machines: ``load_text_data("/work/shared/data/wikitext-2", train_split="valid",
    eval_split="test")`` (only those two splits are there).
    """
    train_lines = read_split(source, train_split)
    eval_lines = read_split(source, eval_split)
    tok = get_tokenizer(tokenizer, train_lines, vocab_size=vocab_size, tokenizer_path=tokenizer_path, data_dir=data_dir)
    return TextData(TokenBlocks(tokenize_to_cache(train_lines, tok, data_dir), block_size),
                    TokenBlocks(tokenize_to_cache(eval_lines, tok, data_dir), block_size), tok)
