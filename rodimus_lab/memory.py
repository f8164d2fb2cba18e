"""How much a model must remember while it generates, computed from its config.

A Transformer's KV cache grows with the context; a Rodimus layer keeps a fixed
n × m state (plus the last conv_size − 1 inputs of its short conv); a Rodimus+ layer adds
a sliding window of one shared key head and H value heads.
"""

from __future__ import annotations

from .config import ModelConfig

__all__ = ["cache_elements", "cache_bytes"]


def cache_elements(config: ModelConfig, context_len: int, *, include_conv: bool = True) -> int:
    """Numbers held per sequence after ``context_len`` tokens, summed over layers."""
    if context_len < 0:
        raise ValueError(f"context_len must be ≥ 0, got {context_len}")
    per_layer = 0
    if config.has_mixer:
        per_layer += config.mem_size * config.d_inner
        if include_conv and config.short_conv:
            per_layer += (config.conv_size - 1) * config.d_inner
    if config.has_attention:
        kept = context_len if config.window is None else min(context_len, config.window)
        per_layer += kept * (config.num_key_heads + config.num_value_heads) * config.head_dim
    return per_layer * config.n_layers


def cache_bytes(config: ModelConfig, context_len: int, *, bytes_per_element: int = 2, include_conv: bool = True) -> int:
    """Bytes of decoding state per sequence (2 bytes per element: bf16, as the paper counts)."""
    return cache_elements(config, context_len, include_conv=include_conv) * bytes_per_element
