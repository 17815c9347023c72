import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: tiny test tensors gain nothing from more, and OpenMP spin-waits make them
# hundreds of times slower when another process holds the second core.
torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
