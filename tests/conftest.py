import os

# Before torch loads: OpenMP threads that spin-wait make tiny ops hundreds of times slower when
# another process holds a core; passive waiting costs nothing here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: tiny test tensors gain nothing from more, and OpenMP spin-waits make them
# hundreds of times slower when another process holds the second core.
torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
