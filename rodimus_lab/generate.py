"""Sampling text from the recurrent state: one full forward over the prompt, then one-token steps.

    prefill(model, input_ids) -> (logits [B, T, V], DecodeState)
    generate(model, input_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
             callback=None) -> LongTensor [B, T + new] | list of LongTensor [T_i + new]
    sample(logits [B, V], temperature=1.0, top_k=None, top_p=None, generator=None) -> LongTensor [B]

``prefill`` is the model's forward over the prompt with a fresh state (``RodimusLM.forward(ids,
state=...)``): the chunkwise DDTS (the fused kernel on GPU) hands over its final state, the short conv
its last inputs, attention its last ``window`` keys/values in the ring slots a step would have used.
Decoding from it computes the same function as stepping the prompt from ``model.init_state``
(tests/test_generate.py checks both, logits and state).

The same loop serves Rodimus, Rodimus+ and the Transformer++ (whose state is its KV cache), so the
three are compared on equal terms. Only the model's public methods are used (``check_ids``,
``init_state``, ``forward``, ``step``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:   # annotations only: the model imports this module (RodimusLM.generate)
    from .model import DecodeState, RodimusLM

__all__ = ["prefill", "generate", "sample"]

Callback = Callable[[torch.Tensor], "bool | None"]


# ------------------------------------------------------------------------ prefill

@torch.no_grad()
def prefill(model: RodimusLM, input_ids: torch.Tensor) -> tuple[torch.Tensor, DecodeState]:
    """Full forward over ``input_ids`` [B, T] (T ≥ 1) → (logits [B, T, V], the state after T tokens)."""
    model.check_ids(input_ids, "input_ids")
    state = model.init_state(input_ids.shape[0])
    return model(input_ids, state=state, check_inputs=False).logits, state


# ------------------------------------------------------------------------ sampling

def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``logits`` [B, V]. temperature 0 is greedy (argmax); top_k keeps the k
    likeliest tokens; top_p keeps the smallest set whose probability reaches p (nucleus)."""
    _check_sampling(temperature, top_k, top_p)
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        outside = probs.cumsum(dim=-1) - probs >= top_p    # mass before this token already reaches p
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def _check_sampling(temperature, top_k, top_p):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number ≥ 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int ≥ 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


# ---------------------------------------------------------------------- generation

@torch.no_grad()
def generate(model: RodimusLM, input_ids, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             callback: Callback | None = None):
    """Continue each prompt by ``max_new_tokens`` sampled tokens.

    input_ids: a LongTensor [B, T] (prompts of one length) → returns LongTensor [B, T + new];
        or a list of 1-D prompts (LongTensors or lists of ints) of different lengths → returns a list of
        1-D LongTensors, each its prompt followed by its new tokens.
    seed: an int makes the output reproducible (a private torch.Generator; the global RNG is untouched);
        None draws from the global RNG.
    callback(tokens): called after every decoding step with a LongTensor [B] of the tokens just
        produced (−1 for a sequence that produced none at this step: see below). Return True to stop;
        the output then holds the tokens produced so far.

    Different prompt lengths use per-sequence state on a common clock, not padding: the batch is
    prefilled with the shortest prompt's length, then stepped one token at a time; a sequence still
    inside its prompt is fed its next prompt token (and reports −1 to the callback), the others feed
    what they sampled. No pad token ever enters a state, so each sequence gets exactly what it would
    get alone, and all sequences share one position, as the attention caches need.
    """
    prompts, ragged = _as_prompts(input_ids)
    _check_request(model, prompts, max_new_tokens, callback)
    for prompt in prompts:
        model.check_ids(prompt[None], "input_ids")   # integer ids inside the vocabulary
    _check_sampling(temperature, top_k, top_p)
    device = model.embeddings.weight.device
    generator = None
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be None or an int, got {seed!r}")
        generator = torch.Generator(device=device).manual_seed(seed)

    lengths = torch.tensor([len(p) for p in prompts], device=device)
    shortest, longest = int(lengths.min()), int(lengths.max())
    tokens = torch.full((len(prompts), longest + max_new_tokens), -1, dtype=torch.long, device=device)
    for row, prompt in zip(tokens, prompts):
        row[:len(prompt)] = prompt

    end = longest if max_new_tokens == 0 else _decode(model, tokens, lengths, shortest, max_new_tokens,
                                                      generator, callback, (temperature, top_k, top_p))
    produced = (end - lengths).clamp(0, max_new_tokens)
    if not ragged:
        return tokens[:, :longest + int(produced[0])]
    return [row[:length + new] for row, length, new in zip(tokens, lengths.tolist(), produced.tolist())]


def _decode(model, tokens, lengths, shortest, max_new_tokens, generator, callback, sampling) -> int:
    """Fill ``tokens`` from position ``shortest`` on; returns the first position left unfilled."""
    logits, state = prefill(model, tokens[:, :shortest])
    logits = logits[:, -1]
    end = int(lengths.max()) + max_new_tokens
    for t in range(shortest, end):
        in_prompt = t < lengths
        token = torch.where(in_prompt, tokens[:, t], sample(logits, *sampling, generator=generator))
        tokens[:, t] = token
        if callback is not None:
            emitting = ~in_prompt & (t < lengths + max_new_tokens)
            if callback(torch.where(emitting, token, -1)) is True:
                return t + 1
        if t + 1 < end:
            logits, state = model.step(token, state)
    return end


def _as_prompts(input_ids) -> tuple[list[torch.Tensor], bool]:
    """A list of 1-D LongTensor prompts, and whether the caller gave a list (ragged) or a [B, T] tensor."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() != 2 or input_ids.shape[0] == 0:
            raise ValueError(f"input_ids must be a LongTensor [B, T] with B ≥ 1 or a list of 1-D prompts, "
                             f"got a tensor of shape {tuple(input_ids.shape)}")
        return list(input_ids), False
    if not isinstance(input_ids, Sequence) or isinstance(input_ids, str) or len(input_ids) == 0:
        raise ValueError("input_ids must be a LongTensor [B, T] or a non-empty list of 1-D prompts (token ids)")
    prompts = [p if isinstance(p, torch.Tensor) else torch.as_tensor(p, dtype=torch.long) for p in input_ids]
    for i, p in enumerate(prompts):
        if p.dim() != 1:
            raise ValueError(f"prompt {i} must be 1-D (token ids), got shape {tuple(p.shape)}")
    return prompts, True


def _check_request(model, prompts, max_new_tokens, callback):
    empty = [i for i, p in enumerate(prompts) if len(p) == 0]
    if empty:
        raise ValueError(f"prompt {empty[0]} is empty: generation needs at least one prompt token "
                         "(e.g. a beginning-of-text id)")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int ≥ 0, got {max_new_tokens!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (tokens [B]) -> bool | None, got {type(callback).__name__}")
    limit = model.config.max_seq_len
    if limit is not None:
        longest = max(len(p) for p in prompts)
        if longest > limit:
            raise ValueError(f"prompt length {longest} exceeds ModelConfig.max_seq_len = {limit}: shorten the prompt")
        if longest + max_new_tokens > limit:
            raise ValueError(f"prompt length {longest} + max_new_tokens {max_new_tokens} exceeds "
                             f"ModelConfig.max_seq_len = {limit}: lower max_new_tokens to ≤ {limit - longest}")
