import os

import torch

# Kernel tests run the Triton kernels through the interpreter where no GPU is visible; the
# variable must be set before any kernel module is imported (triton reads it at decoration).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tiny models on a small CPU: more threads than cores only adds contention.
torch.set_num_threads(1)

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

# deadline=None: numba compiles a generator on its first call.
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
    # Shrinking a failure can take many minutes of numba calls; CI reports the raw example instead.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
