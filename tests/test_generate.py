"""Generation: recurrent decoding = full forward at every position, prefill + steps = stepping from
scratch, seeded sampling is reproducible, ragged batches = each prompt alone, state sizes, bad input."""

import pytest
import torch

from rodimus_lab import ModelConfig, RodimusLM
from rodimus_lab.bench.decode import analytic_state_bytes
from rodimus_lab.generate import generate, prefill, sample

VOCAB = 61
BLOCKS = {
    "rodimus": dict(block="rodimus"),
    "rodimus_plus": dict(block="rodimus_plus", window=3),    # window < every prompt below
    "transformer": dict(block="transformer"),
}


def make_model(block, **extra):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, mem_size=8, chunk_size=4, **BLOCKS[block], **extra)
    return RodimusLM(config).double().eval()


def step_all(model, ids, state=None, start=0):
    state = model.init_state(ids.shape[0]) if state is None else state
    logits = [model.step(ids[:, t], state)[0] for t in range(start, ids.shape[1])]
    return torch.stack(logits, dim=1), state


def assert_states_equal(a, b):
    assert a.position == b.position
    for layer_a, layer_b in zip(a.layers, b.layers):
        for part in layer_a:
            for name in layer_a[part]:
                torch.testing.assert_close(layer_a[part][name], layer_b[part][name], rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module", params=list(BLOCKS))
def model(request):
    return make_model(request.param)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(1))


# -------------------------------------------------------------------- equivalences

def test_recurrent_logits_equal_full_forward_at_every_position(model, ids):
    stepped, _ = step_all(model, ids)
    torch.testing.assert_close(stepped, model(ids).logits, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("split", [1, 2, 5, 12])   # shorter than the conv buffer, than the window, longer
def test_prefill_then_steps_equals_stepping_from_scratch(model, ids, split):
    reference, reference_state = step_all(model, ids)
    logits, state = prefill(model, ids[:, :split])
    torch.testing.assert_close(logits, reference[:, :split], rtol=1e-9, atol=1e-11)
    rest, state = step_all(model, ids, state, start=split)
    torch.testing.assert_close(rest, reference[:, split:], rtol=1e-9, atol=1e-11)
    assert_states_equal(state, reference_state)


def test_greedy_generation_follows_the_full_forward(model, ids):
    out = model.generate(ids[:, :5], 6, temperature=0)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], ids[:, :5])
    for t in range(5, 11):
        assert torch.equal(out[:, t], model(out[:, :t]).logits[:, -1].argmax(-1))


def test_ragged_batch_equals_each_prompt_alone(model, ids):
    prompts = [ids[0, :3], ids[1, :8].tolist()]
    batched = model.generate(prompts, 5, temperature=0)
    assert [len(seq) for seq in batched] == [8, 13]
    for prompt, seq in zip(prompts, batched):
        alone = model.generate(torch.as_tensor(prompt)[None], 5, temperature=0)[0]
        assert torch.equal(seq, alone)


# -------------------------------------------------------------------------- sampling

def test_generate_is_deterministic_under_a_seed(model, ids):
    first = model.generate(ids[:, :4], 8, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    again = generate(model, ids[:, :4], 8, temperature=1.0, top_k=20, top_p=0.9, seed=7)   # the method delegates here
    other = model.generate(ids[:, :4], 8, temperature=1.0, top_k=20, top_p=0.9, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_seed_leaves_the_global_rng_alone(model, ids):
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    model.generate(ids[:, :4], 3, seed=0)
    assert torch.equal(torch.rand(1), expected)


def test_sampling_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(400, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample(logits, top_k=2, generator=g).tolist()) == {0, 1}
    assert set(sample(logits, top_p=0.8, generator=g).tolist()) == {0, 1}    # 0.5 + 0.3 reaches 0.8
    assert set(sample(logits, top_p=0.81, generator=g).tolist()) == {0, 1, 2}
    assert set(sample(logits, top_k=1, generator=g).tolist()) == {0}
    assert set(sample(logits, temperature=0).tolist()) == {0}
    assert set(sample(logits, generator=g).tolist()) == {0, 1, 2, 3}


def test_callback_streams_the_new_tokens_and_can_stop(model, ids):
    seen = []
    out = model.generate(ids[:, :4], 5, seed=0, callback=lambda tokens: seen.append(tokens.clone()))
    assert torch.equal(torch.stack(seen, dim=1), out[:, 4:])

    calls = []

    def stop_after_two(tokens):
        calls.append(tokens)
        return len(calls) == 2

    stopped = model.generate(ids[:, :4], 5, seed=0, callback=stop_after_two)
    assert stopped.shape == (2, 6) and torch.equal(stopped, out[:, :6])

    ragged = []
    model.generate([ids[0, :2], ids[1, :4]], 2, temperature=0, callback=lambda t: ragged.append(t.tolist()))
    assert [[a >= 0, b >= 0] for a, b in ragged] == [[True, False], [True, False], [False, True], [False, True]]


def test_zero_new_tokens_returns_the_prompt(model, ids):
    assert torch.equal(model.generate(ids[:, :4], 0), ids[:, :4])


# -------------------------------------------------------------------------- state size

def test_state_size_independent_of_context_or_bounded_by_window(model):
    c = model.config
    sizes = {}
    for T in (2, 3, 9, 40):
        _, state = prefill(model, torch.randint(0, VOCAB, (1, T)))
        sizes[T] = state.nbytes()
        assert sizes[T] == analytic_state_bytes(c, T, torch.float64)
    if c.block == "transformer":
        assert sizes[2] < sizes[3] < sizes[9] < sizes[40]                # the KV cache grows with the context
    else:                                                                # fixed: DDTS state (+ a ring of `window` slots)
        assert len(set(sizes.values())) == 1


# -------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("args, kwargs, message", [
    ((torch.zeros(1, 0, dtype=torch.long), 3), {}, "empty"),
    (([[1, 2], []], 3), {}, "prompt 1 is empty"),
    (([], 3), {}, "non-empty list"),
    ((torch.ones(1, 3, dtype=torch.long), -1), {}, "max_new_tokens"),
    ((torch.ones(1, 3, dtype=torch.long), 2.5), {}, "max_new_tokens"),
    ((torch.ones(1, 3, dtype=torch.long), 3), {"top_p": 0.0}, "top_p"),
    ((torch.ones(1, 3, dtype=torch.long), 3), {"top_p": 1.5}, "top_p"),
    ((torch.ones(1, 3, dtype=torch.long), 3), {"top_k": 0}, "top_k"),
    ((torch.ones(1, 3, dtype=torch.long), 3), {"temperature": -1}, "temperature"),
    ((torch.ones(1, 3, dtype=torch.long), 3), {"seed": "x"}, "seed"),
    ((torch.full((1, 3), VOCAB), 3), {}, "vocab_size"),
])
def test_bad_input_is_refused_with_a_clear_error(args, kwargs, message):
    model = make_model("rodimus")
    with pytest.raises(ValueError, match=message):
        model.generate(*args, **kwargs)


def test_prompt_longer_than_max_seq_len_is_refused():
    model = make_model("rodimus", max_seq_len=8)
    with pytest.raises(ValueError, match="prompt length 9 exceeds ModelConfig.max_seq_len = 8"):
        model.generate(torch.ones(1, 9, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="lower max_new_tokens to ≤ 2"):
        model.generate(torch.ones(1, 6, dtype=torch.long), 3)
    assert model.generate(torch.ones(1, 6, dtype=torch.long), 2).shape == (1, 8)
