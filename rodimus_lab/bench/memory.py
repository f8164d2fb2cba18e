"""Where a training step's memory goes: the bytes each module saves for the backward, on the kernel path.

    rodimus-lab bench memory                                   # Rodimus, Rodimus+, Transformer++ at the bench sizes
    rodimus-lab bench memory --models rodimus_plus --tensors   # every saved tensor, by module
    python benchmarks/saved_activations.py --seq-len 256

What it does. One forward of each model (``bench train``'s sizes: d_model 768, heads 12, vocabulary 16384,
but 2 layers and a short T) under bf16 autocast, with ``torch.autograd.graph.saved_tensors_hooks``
recording every tensor autograd keeps for the backward and module forward pre/post hooks naming the
module that was running when it was saved. Tensors are counted by their STORAGE (a view keeps its whole
base alive: a chunk of a projection saves the projection), each storage once, under the first module that
saved it; parameters themselves are not activations and are left out (their autocast copies are counted,
as "weight cast", once per step). One layer's bytes per token (layers 0 and 1 agree), times layers and
tokens, plus the head's, the weight casts, 12 bytes per parameter and the loss's gradient (``predict``)
give the peak at the start of the backward, to hold against ``bench train``'s CUDA peak.

The kernel path on a CPU. The models take the GPU's branches: ``backend="triton"`` with TRITON_INTERPRET=1
(so ``rodimus_kernels`` runs its Triton wrappers, ``dispatch.use_triton``), SDPA for the Transformer++
(its GPU path), and the gate projection's tensor-core Function (``glue._GateLinear``: it saves the bf16
x̃; CPUs lack ``mm`` with an fp32 out_dtype, so its products run in bf16 and are up-cast here). With
``launch=False`` (the default) the Triton launches are no-ops: every kernel output is whatever
``torch.empty`` held. Shapes, dtypes and what is saved are those of the GPU run; values are garbage and
nothing here reads them. ``launch=True`` runs the kernels through the interpreter (slow; small T only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from dataclasses import dataclass, field
from unittest import mock

import torch

from .train import LABELS, build, model_config

MODELS = ("rodimus", "rodimus_plus", "transformer", "llama")
HEAD = "(head)"   # what is saved outside the layers: embeddings, final norm, LM head, loss
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")   # "layers.3.attn" here, "model.layers.3.mlp" in transformers


def layer_index(name: str) -> int | None:
    """The layer a module or parameter name belongs to; None outside the layers."""
    match = _LAYER.search(name)
    return None if match is None else int(match.group(1))


@dataclass
class Saved:
    """One storage kept for the backward: the module that saved it first and the tensor as saved."""
    module: str
    shape: tuple
    dtype: torch.dtype
    nbytes: int               # the storage's bytes (a view counts its whole base)
    kind: str                 # "activation" or "weight cast" (autocast's 16-bit copy of a parameter)
    savers: list = field(default_factory=list)   # every module that saved this storage


@dataclass
class Accounting:
    """The storages one forward saved for its backward, by module, and the run's sizes."""
    model: str
    tokens: int
    n_layers: int
    params: int
    head_params: int          # parameters outside the layers (embeddings, final norm, LM head)
    saved: list
    kernels: tuple = ()       # the Triton kernels the forward launched (or would have), by name

    @property
    def total(self) -> int:
        return sum(s.nbytes for s in self.saved)

    def by_module(self, kind: str | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.saved:
            if kind is None or s.kind == kind:
                out[s.module] = out.get(s.module, 0) + s.nbytes
        return out

    def layer_bytes(self, index: int, kind: str | None = None) -> int:
        return sum(b for name, b in self.by_module(kind).items() if layer_index(name) == index)

    def head_bytes(self, kind: str | None = None) -> int:
        return sum(b for name, b in self.by_module(kind).items() if layer_index(name) is None)


def _is_weight_cast(t: torch.Tensor) -> bool:
    """A 16-bit copy autocast made of a parameter (maybe seen through views such as its transpose): its
    history is a chain of one-input nodes, a ToCopy among them, that ends at a leaf (AccumulateGrad)."""
    fn, cast = t.grad_fn, False
    for _ in range(4):
        if fn is None:
            return False
        name = type(fn).__name__
        if name == "AccumulateGrad":
            return cast
        cast = cast or "ToCopy" in name
        inputs = [nxt for nxt, _ in fn.next_functions if nxt is not None]
        if len(inputs) != 1:
            return False
        fn = inputs[0]
    return False


def _storage_key(t: torch.Tensor):
    st = t.untyped_storage()
    return (t.device.type, st.data_ptr(), st.nbytes())


@contextlib.contextmanager
def kernel_path_on_cpu(launch: bool = False):
    """Make a CPU forward take the branches the models take on a GPU (see the module docstring). Yields a
    list that fills with the names of the Triton kernels launched (run or skipped)."""
    from rodimus_kernels import glue
    from triton.runtime.interpreter import InterpretedFunction

    from .. import model as model_module

    def mm(a, b, *, out_dtype=None):   # the CPU lacks aten::mm.dtype; only the output dtype matters here
        return real_mm(a, b) if out_dtype is None else real_mm(a, b).to(out_dtype)

    def gate_linear(x, weight, bias):   # the CUDA branch of glue.gate_linear for 16-bit x
        with torch.autocast(x.device.type, enabled=False):
            if x.dtype in (torch.bfloat16, torch.float16):
                return glue._GateLinear.apply(x, weight, bias)
            return glue.glue_torch.gate_linear_torch(x, weight, bias)

    def run(self, *args, **kwargs):
        launched.append(self.__name__)
        return real_run(self, *args, **kwargs) if launch else None

    real_mm, real_run, launched = torch.mm, InterpretedFunction.run, []
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, {"TRITON_INTERPRET": "1"}))
        stack.enter_context(mock.patch.object(model_module, "_use_sdpa", lambda backend, x: backend != "reference"))
        stack.enter_context(mock.patch.object(glue, "gate_linear", gate_linear))
        stack.enter_context(mock.patch.object(torch, "mm", mm))
        stack.enter_context(mock.patch.object(InterpretedFunction, "run", run))
        yield launched


def account(model: torch.nn.Module, ids: torch.Tensor, *, name: str = "", autocast: bool = True) -> Accounting:
    """The storages one training forward of ``model`` on ``ids`` saves for the backward (loss on ids),
    each attributed to the innermost module running when it was first saved."""
    params = {_storage_key(p) for p in model.parameters()}
    stack: list[str] = []
    saved: dict = {}
    names = {m: n for n, m in model.named_modules()}

    # Global module hooks: a hook on the module itself would switch the model's Taps on (they compute
    # what they show only while a hook listens), and with them the reference paths.
    def pre(module, args):
        stack.append(names.get(module))

    def post(module, args, output):
        stack.pop()

    def pack(t: torch.Tensor):
        key = _storage_key(t)
        nbytes = key[2]
        if nbytes and key not in params:
            where = next((n for n in reversed(stack) if n), HEAD)   # innermost module of this model
            if key not in saved:
                kind = "weight cast" if _is_weight_cast(t) else "activation"
                saved[key] = Saved(where, tuple(t.shape), t.dtype, nbytes, kind)
            saved[key].savers.append(where)
        return t

    # the project's models skip their id-range check (as in bench train); transformers' take no such flag
    extra = {"check_inputs": False} if hasattr(model, "check_ids") else {}
    handles = [torch.nn.modules.module.register_module_forward_pre_hook(pre),
               torch.nn.modules.module.register_module_forward_hook(post, always_call=True)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = model(ids, labels=ids, **extra).loss
    finally:
        for h in handles:
            h.remove()
    del loss   # the graph (and what it saved) goes; the records keep sizes only
    head_params = sum(p.numel() for n, p in model.named_parameters() if layer_index(n) is None)
    n_layers = getattr(model.config, "n_layers", None) or model.config.num_hidden_layers
    return Accounting(name, ids.numel(), n_layers, sum(p.numel() for p in model.parameters()), head_params,
                      list(saved.values()))


def measure(name: str, *, seq_len=256, batch=1, n_layers=2, launch=False, **sizes) -> Accounting:
    """``account`` of bench model ``name`` (``bench train``'s sizes; n_layers layers) on the CPU kernel path."""
    torch.manual_seed(0)
    config = model_config(name, n_layers=n_layers, backend="triton", **sizes)
    with kernel_path_on_cpu(launch) as launched:
        model = build(name, config)
        ids = torch.randint(0, config.vocab_size, (batch, seq_len))
        acc = account(model, ids, name=name)
    acc.kernels = tuple(sorted(set(launched)))
    return acc


GIB = 2 ** 30


def predict(acc: Accounting, *, n_layers=12, tokens=16384, vocab_size=16384) -> dict:
    """Scale a small run to the bench, in GiB, at the start of the backward (its peak):

    layers      one layer's saved activations per token × layers × tokens
    head        the head's saved activations per token × tokens (final norm, LM head input, fp32 log-probs)
    casts       the layers' bf16 weight copies (× layers) and the head's, once per step (not per token)
    static      12 bytes per parameter: fp32 weights and AdamW's exp_avg, exp_avg_sq (the gradients are
                set to None after each step and grow while the activations are freed)
    loss grad   the loss's first backward steps hold the gradients of the fp32 log-probs and of the fp32
                logits at once, 2 × 4·V bytes per token, next to everything saved
    """
    per_layer = acc.layer_bytes(0, "activation") / acc.tokens
    head = acc.head_bytes("activation") / acc.tokens
    layer_params = (acc.params - acc.head_params) // acc.n_layers
    params = acc.head_params + layer_params * n_layers
    parts = dict(layers=per_layer * n_layers * tokens, head=head * tokens,
                 casts=acc.layer_bytes(0, "weight cast") * n_layers + acc.head_bytes("weight cast"),
                 static=12 * params, loss_grad=2 * 4 * vocab_size * tokens)
    out = {k: v / GIB for k, v in parts.items()}
    out.update(per_layer_per_token=per_layer, head_per_token=head, params=params, peak=sum(out.values()))
    return out


def _fmt_shape(s: Saved) -> str:
    return f"{list(s.shape)} {str(s.dtype).removeprefix('torch.')}"


def format_layer(acc: Accounting, *, tensors: bool = False, index: int = 0) -> str:
    """Bytes per token saved by each module of layer ``index`` (and with ``tensors`` each storage)."""
    def short(name):   # the name inside the layer
        return _LAYER.split(name, maxsplit=1)[-1] or "(layer)"

    lines = [f"{LABELS.get(acc.model, acc.model)}: saved for backward, bytes per token, layer {index}"]
    rows = sorted(((n, b) for n, b in acc.by_module().items() if layer_index(n) == index), key=lambda r: -r[1])
    for module, b in rows:
        lines.append(f"  {short(module):<28}{b / acc.tokens:>10,.0f}")
        if tensors:
            for s in sorted((s for s in acc.saved if s.module == module), key=lambda s: -s.nbytes):
                also = sorted({short(x) for x in s.savers} - {short(module)})
                note = f"  also saved by {', '.join(also)}" if also else ""
                lines.append(f"      {_fmt_shape(s):<34}{s.kind:<13}{s.nbytes / acc.tokens:>9,.0f}{note}")
    lines.append(f"  {'layer total':<28}{acc.layer_bytes(index) / acc.tokens:>10,.0f}   of which activations "
                 f"{acc.layer_bytes(index, 'activation') / acc.tokens:,.0f}, weight casts (per step, not per token) "
                 f"{acc.layer_bytes(index, 'weight cast') / acc.tokens:,.0f}")
    lines.append(f"  Triton kernels of the forward: {', '.join(acc.kernels) or 'none'}")
    return "\n".join(lines)


def format_prediction(accs: list[Accounting], *, n_layers=12, tokens=16384, vocab_size=16384) -> str:
    lines = [f"scaled to {n_layers} layers × {tokens:,} tokens (GiB = 2^30 bytes; see predict())",
             f"{'model':<28}{'params':>9}{'B/tok/layer':>13}{'head B/tok':>12}{'layers':>8}{'head':>7}{'casts':>7}"
             f"{'static':>8}{'loss grad':>11}{'peak GiB':>10}"]
    for acc in accs:
        p = predict(acc, n_layers=n_layers, tokens=tokens, vocab_size=vocab_size)
        lines.append(f"{LABELS.get(acc.model, acc.model):<28}{p['params'] / 1e6:>8.1f}M{p['per_layer_per_token']:>13,.0f}"
                     f"{p['head_per_token']:>12,.0f}{p['layers']:>8.2f}{p['head']:>7.2f}{p['casts']:>7.2f}"
                     f"{p['static']:>8.2f}{p['loss_grad']:>11.2f}{p['peak']:>10.2f}")
    return "\n".join(lines)


def main(argv=None) -> list[Accounting]:
    parser = argparse.ArgumentParser(prog="rodimus-lab bench memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, from %(default)s")
    parser.add_argument("--seq-len", type=int, default=256, help="T of the measured forward (a multiple of 64)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2, help="layers of the measured model (each must agree)")
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--n-heads", type=int, default=12)
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--window", type=int, default=1024, help="Rodimus+ sliding window (keys seen)")
    parser.add_argument("--bench-layers", type=int, default=12, help="layers of the predicted bench model")
    parser.add_argument("--bench-tokens", type=int, default=16384, help="tokens per step of the predicted bench")
    parser.add_argument("--tensors", action="store_true", help="list every saved storage under its module")
    parser.add_argument("--launch", action="store_true",
                        help="run the Triton kernels through the interpreter instead of no-op launches (slow)")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    for bad in sorted(set(models) - set(MODELS)):
        parser.error(f"--models: unknown model {bad!r}; choose from {','.join(MODELS)}")
    sizes = dict(d_model=args.d_model, n_heads=args.n_heads, vocab_size=args.vocab_size, window=args.window)
    accs = []
    for name in models:
        acc = measure(name, seq_len=args.seq_len, batch=args.batch, n_layers=args.layers, launch=args.launch, **sizes)
        accs.append(acc)
        print(format_layer(acc, tensors=args.tensors))
        print()
    print(format_prediction(accs, n_layers=args.bench_layers, tokens=args.bench_tokens, vocab_size=args.vocab_size))
    return accs


if __name__ == "__main__":
    main()
