"""Run a model on one sequence and capture every layer's gates, DDTS inputs, states and
attention weights through the model's taps (forward hooks; the model is not changed)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..ddts import ddts_parallel, ddts_states

__all__ = ["probe", "ProbeResult"]


@dataclass
class ProbeResult:
    """What one forward pass showed, per layer; tensors are on the CPU, without the batch dim.

    gates[i]:     dict(g, tau, log_alpha, alpha_hat), each [T, n] (None where the gate ablation has none)
    ddts_inputs[i]: dict(q, k, v, log_alpha): the DDTS inputs [T, n] / [T, m] (k already α̂ ⊙ k̂)
    attention[i]: softmax weights [H, T, T] (Rodimus+ and Transformer layers)
    states(i):    S_1 … S_T of layer i, [T, n, m], computed on demand
    """
    token_ids: list[int]
    tokens: list[str]
    logits: torch.Tensor
    gates: dict[int, dict] = field(default_factory=dict)
    ddts_inputs: dict[int, dict] = field(default_factory=dict)
    attention: dict[int, torch.Tensor] = field(default_factory=dict)

    def states(self, layer: int) -> torch.Tensor:
        if layer not in self.ddts_inputs:
            raise KeyError(f"layer {layer} has no DDTS (layers with one: {sorted(self.ddts_inputs)})")
        x = {k: t[None, :, None] for k, t in self.ddts_inputs[layer].items()}   # back to [1, T, 1, ·]
        return ddts_states(x["q"], x["k"], x["v"], x["log_alpha"])[0, :, 0]

    def implicit_attention(self, layer: int) -> torch.Tensor:
        """DDTS's implicit attention matrix of ``layer``, [T, T] (from :func:`ddts_parallel`)."""
        if layer not in self.ddts_inputs:
            raise KeyError(f"layer {layer} has no DDTS (layers with one: {sorted(self.ddts_inputs)})")
        x = {k: t[None, :, None] for k, t in self.ddts_inputs[layer].items()}
        return ddts_parallel(x["q"], x["k"], x["v"], x["log_alpha"])[1][0, 0]


def _encode(text: str, tokenizer) -> list[int]:
    ids = tokenizer.encode(text)
    ids = getattr(ids, "ids", ids)          # Hugging Face `tokenizers` return an Encoding
    return [int(i) for i in ids]


def _token_strings(ids: list[int], tokenizer) -> list[str]:
    if tokenizer is None:
        return [str(i) for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def _one(t):
    """Batch element 0 on the CPU in float32; the single DDTS head dim [T, 1, ·] dropped."""
    if t is None:
        return None
    t = t.detach()[0].float().cpu()
    return t.squeeze(1) if t.dim() == 3 and t.shape[1] == 1 else t


def probe(model, input_ids=None, *, text: str | None = None, tokenizer=None) -> ProbeResult:
    """Run ``model`` on ONE sequence (ids [T] or [1, T], or ``text`` with a ``tokenizer`` having
    encode/decode) and return every layer's gates, DDTS inputs and attention weights.

    Hooks are removed afterwards, even on error; the model runs under ``torch.no_grad``.
    """
    if (input_ids is None) == (text is None):
        raise ValueError("give exactly one of input_ids or text (with tokenizer)")
    if text is not None:
        if tokenizer is None:
            raise ValueError("text needs a tokenizer with encode(str) and decode(list[int])")
        input_ids = torch.tensor([_encode(text, tokenizer)])
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"probe looks at one sequence: input_ids must be [T] or [1, T], got {tuple(input_ids.shape)}")
    ids = input_ids[0].tolist()
    device = next(model.parameters()).device
    result = ProbeResult(token_ids=ids, tokens=_token_strings(ids, tokenizer), logits=torch.empty(0))

    def store(into: dict, i: int):
        def hook(_module, inputs, _output):
            value = inputs[0]
            into[i] = {k: _one(t) for k, t in value.items()} if isinstance(value, dict) else _one(value)
        return hook

    handles = []
    try:
        for i, layer in enumerate(model.layers):
            if hasattr(layer, "mixer"):
                handles.append(layer.mixer.gate_tap.register_forward_hook(store(result.gates, i)))
                handles.append(layer.mixer.ddts_tap.register_forward_hook(store(result.ddts_inputs, i)))
            if hasattr(layer, "attn"):
                handles.append(layer.attn.weights_tap.register_forward_hook(store(result.attention, i)))
        with torch.no_grad():
            result.logits = model(input_ids.to(device)).logits[0].float().cpu()
    finally:
        for h in handles:
            h.remove()
    return result
