import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # These models are tiny: intra-op threads cost more than they give, and on a loaded machine
    # oversubscription slows a training loop by 10x or more.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
