"""Prefill through the kernels (rodimus_lab.bench.prefill.measure): the state a prompt leaves on the
'triton' backend equals the float32 reference's, and the DDTS chunk kernel runs once per Rodimus layer.

On CPU the kernels run under TRITON_INTERPRET=1 at small sizes (float32, no autocast); the `gpu` test
is the issue's must-show at full length: a 4096-token prompt under bf16 autocast (tolerance bf16-sized,
far below the O(1) error of a wrong wiring). Timing is printed (`pytest -rP`), never asserted.
"""

import pytest

from conftest import gpu, interpreted
from rodimus_lab.bench.prefill import bench_config, format_table, measure


@interpreted
@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus"])
def test_prefill_through_the_kernels_hands_over_the_reference_state_interpreted(block):
    config = bench_config(block, d_model=128, n_layers=2, vocab_size=61, window=5)
    row = measure(config, 70, batch_size=2, device="cpu", repeats=1, autocast=False)   # two DDTS chunks
    print(format_table([row]))
    assert row["ddts_kernel_calls"] == 2
    expected = {"logits (last token)", "DDTS states", "conv buffers"}
    expected |= {"cached keys", "cached values"} if block == "rodimus_plus" else set()
    assert set(row["errors"]) == expected
    assert max(row["errors"].values()) <= 1e-4, row["errors"]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus"])
def test_gpu_4k_prompt_prefill_state_matches_reference(block):
    config = bench_config(block, d_model=768, n_layers=4)
    row = measure(config, 4096, device="cuda", repeats=3)
    print(format_table([row]))
    assert row["ddts_kernel_calls"] == config.n_layers
    assert max(row["errors"].values()) <= 3e-2, row["errors"]
