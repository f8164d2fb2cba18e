"""The models on CUDA with the Triton kernels wired in, the way training runs them: bf16 autocast.

Rodimus and Rodimus+ (SW-SKA with window < T) with backend="triton" under bf16 autocast against the same
weights with backend="reference" in float32 (no autocast): logits and every parameter gradient. The
tolerance is bf16-sized (the PyTorch reference under CPU autocast is 1.5e-2 off in its worst gradient), far
below the O(1) error of a wrong wiring.
"""

import pytest
import torch

from conftest import gpu, rel_rms
from rodimus_lab import ModelConfig, RodimusLM

pytestmark = [pytest.mark.gpu, gpu]


@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus"])
def test_bf16_autocast_kernels_match_float32_reference(block):
    def model(backend):
        torch.manual_seed(0)
        window = 96 if block == "rodimus_plus" else None
        config = ModelConfig(vocab_size=509, d_model=256, n_layers=2, block=block, mem_size=64, window=window,
                             backend=backend)
        return RodimusLM(config).cuda()

    fused, ref = model("triton"), model("reference")
    ids = torch.randint(0, 509, (2, 333), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = fused(ids, labels=ids).loss
    loss_ref = ref(ids, labels=ids).loss
    assert abs(loss.item() - loss_ref.item()) <= 1e-2 * loss_ref.item()
    loss.backward()
    loss_ref.backward()
    for (name, p), p_ref in zip(fused.named_parameters(), ref.parameters()):
        assert rel_rms(p.grad, p_ref.grad) <= 5e-2, name
