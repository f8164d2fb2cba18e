"""The HGRN2-style gate of the MQAR sweep (docs/results/mqar_state_size): what it is and why it writes little.

`gate: hgrn2` keeps DDTS' decay α = e^{−τ·g} (g = softplus, τ = sigmoid of the gate logits) and couples the
write to it, α̂ = 1 − α, where DDTS writes α̂ = g^τ. With the initial gate biases (g₀ ∈ [1e−3, 0.1], τ₀ ∈
[1/16, 0.9]: a long memory, α ≈ 1) the coupled gate writes 1 − e^{−τg} ≤ τ·g of each key, DDTS g^τ ≥ g: at
least 1/τ times as much, typically tens of times. That is why the HGRN2-style points of the H200 sweep
stayed near the plateau for most of their 1500 steps (numbers: docs/results/sweep_trials/hgrn2_gate_cpu/).
"""

import torch

from rodimus_lab import ModelConfig, RodimusLM
from rodimus_lab import ddts


def test_hgrn2_style_gate_is_the_ddts_decay_with_a_coupled_write():
    logits = torch.randn(3, 11, 2 * 8, dtype=torch.float64) * 3
    coupled, selective = ddts.gates("hgrn2", logits, 8), ddts.gates("ddts", logits, 8)
    assert torch.equal(coupled.log_alpha, selective.log_alpha)   # the same decay as DDTS from the same logits
    assert torch.allclose(coupled.log_alpha.exp() + coupled.alpha_hat, torch.ones_like(coupled.alpha_hat),
                          rtol=0, atol=1e-12)                        # α + α̂ = 1
    assert not torch.allclose(selective.log_alpha.exp() + selective.alpha_hat, torch.ones_like(coupled.alpha_hat))


def test_at_the_initial_gate_biases_the_coupled_gate_writes_far_less_than_ddts():
    """The sweep's model (d 128, n 64, N(0, 1/d) init): on a zero input the gate logits are the biases."""
    torch.manual_seed(0)
    mixer = RodimusLM(ModelConfig(vocab_size=64, d_model=128, n_layers=1, mem_size=64, gate="hgrn2",
                                  init_std=0.0884, embed_scale=11.31)).layers[0].mixer
    logits = mixer.gate_logits(torch.zeros(1, 1, mixer.config.d_inner))[0, 0]
    coupled, selective = ddts.gates("hgrn2", logits, 64), ddts.gates("ddts", logits, 64)
    assert (coupled.alpha_hat <= coupled.g * coupled.tau).all()                       # 1 − e^{−τg} ≤ τg
    assert (selective.alpha_hat * coupled.tau >= coupled.alpha_hat).all()             # g^τ ≥ (1 − α) / τ
    assert coupled.alpha_hat.median() < 0.01 < 0.05 < selective.alpha_hat.median()
    assert (selective.alpha_hat / coupled.alpha_hat).median() > 10
