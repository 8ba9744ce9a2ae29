import os
import subprocess
import sys

import pytest
import torch

from kernels import _host
from tests.kernels.conftest import DEVICE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run in a fresh interpreter where `import triton` fails: architectures imports, a torch-backend model
# of both recurrent mixers trains, and each triton-backend op raises one clear ImportError, each time.
WITHOUT_TRITON = """
import sys
sys.modules["triton"] = None
import torch
import architectures
from architectures import LanguageModel, ModelConfig
from kernels.gated_delta_rule import chunk_gated_delta_rule
from kernels.ssd import chunk_ssd

torch.manual_seed(0)
config = ModelConfig(vocab_size=8, d_model=32, n_layers=2, n_heads=2, pattern="GM", backend="torch")
model = LanguageModel(config, generator=torch.Generator().manual_seed(0))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
tokens = torch.randint(0, 8, (4, 12), generator=torch.Generator().manual_seed(1))
losses = []
for _ in range(5):
    logits = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 8), tokens[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
assert losses[-1] < losses[0], losses
q = torch.randn(1, 8, 2, 16)
x, dt, A, B = torch.randn(1, 8, 2, 16), torch.rand(1, 8, 2), -torch.rand(2), torch.randn(1, 8, 1, 16)
for _ in range(2):
    for name, call in [
        ("gdn", lambda: chunk_gated_delta_rule(q, q, q, -dt, dt, backend="triton")),
        ("ssd", lambda: chunk_ssd(x, dt, A, B, B, backend="triton")),
    ]:
        try:
            call()
        except ImportError as err:
            print(name, "ImportError:", err)
        else:
            raise AssertionError(name + " ran without triton")
print("triton" in sys.modules and sys.modules["triton"] is None)
"""


def test_architectures_and_the_torch_backend_work_without_triton():
    env = dict(os.environ, TRITON_INTERPRET="1")  # so that the device check passes and the import runs
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TRITON], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "True"  # nothing imported triton behind the block
    errors = [line for line in lines if "ImportError" in line]
    assert len(errors) == 4 and all("pip install triton" in line for line in errors), lines


def test_poisoning_covers_empty_empty_like_and_new_empty():
    # the autouse fixture of tests/kernels/conftest.py
    assert torch.empty(7, device=DEVICE).isnan().all()
    assert torch.empty_like(torch.ones(3, dtype=torch.bfloat16, device=DEVICE)).isnan().all()
    assert torch.ones(2, device=DEVICE).new_empty(5).isnan().all()
    assert torch.empty(3, dtype=torch.int32).dtype == torch.int32  # integer buffers are left alone


def test_grid_limits_raise_a_clear_error():
    _host.check_grid((2**31 - 1, 65535, 65535))
    for grid in [(2**31, 1), (1, 65536), (1, 1, 65536)]:
        with pytest.raises(ValueError, match="exceeds CUDA's limits"):
            _host.check_grid(grid)


def test_fold_and_unfold_move_a_vmapped_dimension_into_the_batch():
    x = torch.arange(2 * 3 * 4).reshape(3, 2, 4)  # vmapped dimension at 1, size 2
    folded = _host.fold(x, 1, 2)
    assert folded.shape == (6, 4) and torch.equal(folded[3:], x[:, 1])
    assert torch.equal(_host.unfold(folded, 2), x.movedim(1, 0))
    shared = _host.fold(x[:, 0], None, 2)  # not vmapped: the same for each slice
    assert torch.equal(shared[:3], shared[3:])
    assert _host.fold(None, None, 2) is None and _host.unfold(None, 2) is None


def test_bad_backend_names_the_allowed_ones():
    with pytest.raises(ValueError, match="triton.*torch"):
        _host.check_backend("cuda")
