"""Released Rodimus* checkpoints: a Hugging Face snapshot folder, or a hub repo id, → RodimusLM.

The official releases (github.com/codefuse-ai/rodimus) are Hugging Face repos holding the official
``config.json``, the weights (``model.safetensors``, safetensors shards with their
``model.safetensors.index.json``, or ``pytorch_model.bin``) and a ``tokenizer.json``::

    model = rodimus_lab.from_pretrained("codefuse-ai/Rodimus-Plus-Coder-1.6B-Base")   # or a local folder
    tokenizer = rodimus_lab.pretrained.load_tokenizer("codefuse-ai/Rodimus-Plus-Coder-1.6B-Base")

A repo id downloads through ``huggingface_hub`` (into its cache) unless the snapshot is cached
already; offline (``HF_HUB_OFFLINE=1`` or no network) a missing snapshot is a one-line error saying
how to get it. A bad folder is an error naming the file and the tensor or key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .data.text import BPETokenizer, load_bpe
from .model import RodimusLM
from .official import config_from_official, config_to_official, load_official, official_state_dict

__all__ = ["RELEASES", "PretrainedError", "from_pretrained", "load_tokenizer", "save_pretrained", "snapshot_folder",
           "read_weights"]

# The official releases on the Hugging Face hub (also on ModelScope under the same names).
RELEASES = {
    "codefuse-ai/Rodimus-Plus-Coder-1.6B-Base": "Rodimus+, 1.6B, 8.2T tokens, 4K context",
    "codefuse-ai/Rodimus-Plus-Coder-1.6B-Chat": "Rodimus+, 1.6B, chat",
    "codefuse-ai/Rodimus-Plus-Coder-4B-Base": "Rodimus+, 4B, 8.2T tokens, 4K context",
    "codefuse-ai/Rodimus-Plus-Coder-4B-Chat": "Rodimus+, 4B, chat",
    "codefuse-ai/rodimus_plus_1B6_base_20241001": "Rodimus+, 1.6B, 1T tokens (the paper's benchmarks)",
    "codefuse-admin/rodimus_1B4_base_20241001": "Rodimus, 1.4B, 500B tokens (the paper's benchmarks)",
}
# What a snapshot download fetches (weights in either format, config, tokenizer; no README/images).
_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
          "pytorch_model.bin.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


class PretrainedError(RuntimeError):
    """A snapshot that cannot be found, fetched or read; the message names the file (and key)."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _how_to_get(repo_id: str) -> str:
    return (f"download it once with network access (`hf download {repo_id}`, or `huggingface-cli download "
            f"{repo_id}` with older huggingface_hub), or pass the path of a folder that holds it")


def snapshot_folder(path_or_repo_id: str | os.PathLike, *, revision: str | None = None,
                    cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The local folder of a snapshot: the path itself, or the hub repo's snapshot, from the Hugging Face
    cache (``cache_dir``; None: its default) or else downloaded (``download=False``: an error instead)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_repo_id)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise PretrainedError(f"{text}: not a folder, and not a Hugging Face repo id (owner/name)")
    from huggingface_hub import snapshot_download

    try:   # the cache first: no network needed when the snapshot is there
        return Path(snapshot_download(text, revision=revision, allow_patterns=_FILES, cache_dir=cache_dir,
                                      local_files_only=True))
    except Exception:   # noqa: BLE001 (any miss: not cached, or cached incompletely)
        pass
    if _offline() or not download:
        why = "HF_HUB_OFFLINE is set" if _offline() else "download=False"
        raise PretrainedError(f"{text} is not in the Hugging Face cache and {why}: {_how_to_get(text)}")
    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=_FILES, cache_dir=cache_dir))
    except Exception as e:   # noqa: BLE001 (no network, unknown repo, gated repo, …: one line)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PretrainedError(f"could not download {text} ({first}): {_how_to_get(text)}") from None


def read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a snapshot and, for each, the file it came from."""
    index = next((folder / n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")
                  if (folder / n).is_file()), None)
    if index is not None:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise PretrainedError(f"{index}: not a shard index with a 'weight_map' ({e})") from None
        files = {}
        for name, shard in weight_map.items():
            files.setdefault(shard, []).append(name)
    else:
        single = next((n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
        if single is None:
            raise PretrainedError(f"{folder}: no weights (expected model.safetensors, model.safetensors.index.json "
                                  "with its shards, or pytorch_model.bin)")
        files = {single: None}
    tensors, sources = {}, {}
    for shard, names in files.items():
        path = folder / shard
        if not path.is_file():
            raise PretrainedError(f"{path}: missing shard (the index lists it for {names[0]!r})")
        loaded = _load_file(path)
        for name in names or []:
            if name not in loaded:
                raise PretrainedError(f"{path}: has no tensor {name!r}, which {index.name} puts there")
        for name, tensor in loaded.items():
            if name in sources:
                raise PretrainedError(f"{path}: tensor {name!r} is also in {sources[name]}")
            tensors[name], sources[name] = tensor, shard
    return tensors, sources


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:   # noqa: BLE001 (truncated or foreign file)
        raise PretrainedError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None


def from_pretrained(path_or_repo_id: str | os.PathLike, *, revision: str | None = None,
                    cache_dir: str | os.PathLike | None = None, dtype: torch.dtype | None = None) -> RodimusLM:
    """A released official checkpoint as a RodimusLM in eval mode (``dtype``: cast the weights; None: as stored)."""
    folder = snapshot_folder(path_or_repo_id, revision=revision, cache_dir=cache_dir)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise PretrainedError(f"{config_path}: missing (the official config.json)")
    try:
        official = json.loads(config_path.read_text())
        config = config_from_official(official)
    except (ValueError, TypeError) as e:   # OfficialConfigError names the key
        raise PretrainedError(f"{config_path}: {e}") from None
    tensors, sources = read_weights(folder)
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        model = load_official(tensors, config, sources=sources)
    except ValueError as e:   # names the tensor and its file
        raise PretrainedError(f"{folder}: {e}") from None
    return model.eval()


def load_tokenizer(path_or_repo_id: str | os.PathLike, *, revision: str | None = None,
                   cache_dir: str | os.PathLike | None = None) -> BPETokenizer:
    """The snapshot's tokenizer.json (encode / decode / vocab_size), through the ``tokenizers`` library."""
    path = snapshot_folder(path_or_repo_id, revision=revision, cache_dir=cache_dir) / "tokenizer.json"
    if not path.is_file():
        raise PretrainedError(f"{path}: missing (the snapshot's tokenizer)")
    return load_bpe(path)


def save_pretrained(model: RodimusLM, folder: str | os.PathLike, *, shards: int = 1,
                    tokenizer: str | os.PathLike | None = None) -> Path:
    """Write ``model`` as a snapshot folder in the official format, which the official code and
    :func:`from_pretrained` read: config.json, the weights (``model.safetensors``, or ``shards`` files
    ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``) and, given the path of
    a tokenizer.json, a copy of it."""
    from safetensors.torch import save_file

    if not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be an int ≥ 1, got {shards!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    official = config_to_official(model.config)
    tensors = {k: v.detach().cpu().contiguous() for k, v in official_state_dict(model).items()}
    if model.config.tie_embeddings:   # one tensor under two names: the official code ties lm_head itself
        tensors.pop("lm_head.weight")
    (folder / "config.json").write_text(json.dumps(official, indent=2) + "\n")
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
    else:   # consecutive tensors, about the same number of bytes per shard
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        names, seen, weight_map = list(tensors), 0, {}
        for name in names:
            shard = min(shards - 1, seen * shards // total)
            weight_map[name] = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
            seen += tensors[name].numel() * tensors[name].element_size()
        for file in sorted(set(weight_map.values())):
            save_file({n: tensors[n] for n in names if weight_map[n] == file}, str(folder / file))
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    if tokenizer is not None:
        (folder / "tokenizer.json").write_bytes(Path(tokenizer).read_bytes())
    return folder
