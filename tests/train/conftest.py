"""Training tests run torch single-threaded: tiny tensors gain nothing from threads, and on a
busy 2-core CI machine OpenMP spin-waiting makes each step ~100x slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
