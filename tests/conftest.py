"""Suite-wide settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests use tiny models: one torch thread avoids OpenMP spin-waits, which made small steps
    up to 50× slower on a shared 2-core machine (rodimus_plus decoding: 1.48 s vs 0.03 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
