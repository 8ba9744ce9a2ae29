"""A new mixer is one class plus one registry entry: a toy mixer defined here goes through the
whole pipeline (plan, a CPU run, state size) without any other file knowing of it."""

import dataclasses

import pytest
import torch
from torch import nn

from architectures import MIXERS, LanguageModel, ModelConfig, size_for


class CumulativeMean(nn.Module):
    """Causal running mean of a projection: the simplest mixer with a state."""

    letter = "C"

    @staticmethod
    def check_config(config):
        if config.d_model % 4:
            raise ValueError(f"mixer C needs d_model divisible by 4, got {config.d_model}")

    @staticmethod
    def width_step(config):
        return 4

    def __init__(self, config):
        super().__init__()
        self.in_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x):  # [B, T, D]
        steps = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]
        return self.out_proj(self.in_proj(x).cumsum(1) / steps)

    def init_weights(self, generator):
        """Nothing beyond the model's linear layers."""

    def state_size(self, seq_len):
        return self.in_proj.out_features + 1  # the running sum and the count


@pytest.fixture
def toy_mixer(monkeypatch):
    monkeypatch.setitem(MIXERS, "C", CumulativeMean)
    return CumulativeMean


SWEEP = """
name = "toy"
patterns = ["CA"]
sizes = [6000]
lrs = [3e-3]
seeds = [0]
device = "cpu"
[model]
n_layers = 2
n_heads = 2
pos = "none"
[train]
steps = 30
warmup = 5
eval_examples_per_bin = 32
[[task]]
name = "parity"
train = { length = [2, 6] }
eval = { length = [2, 8] }
"""


def test_a_registered_toy_mixer_plans_trains_and_reports_its_state(toy_mixer, tmp_path, capsys):
    from sweeps.cli import main
    from sweeps.config import parse_sweep
    from sweeps.grid import check_runs, expand
    from sweeps.train import run

    path = tmp_path / "toy.toml"
    path.write_text(SWEEP)
    main(["sweep", "plan", str(path)])
    assert "1 runs" in capsys.readouterr().out
    (spec,) = expand(parse_sweep(SWEEP))
    (sized,) = check_runs([spec]).values()
    assert sized.d_model % 4 == 0 and sized.layer_pattern == "CA" and sized.pos == "none"
    result = run(spec)
    assert result["status"] == "done", result["error"]
    assert result["evals"] and result["n_params"] == pytest.approx(6000, rel=0.05)
    model = LanguageModel(sized)
    assert model.state_size(8) == (sized.d_model + 1) + 2 * 8 * sized.d_model  # toy + attention KV


def test_the_toy_mixers_own_check_and_width_step_are_used(toy_mixer):
    with pytest.raises(ValueError, match="mixer C needs d_model divisible by 4"):
        ModelConfig(vocab_size=8, d_model=18, n_heads=1, n_layers=1, pattern="C")
    config = size_for(ModelConfig(vocab_size=8, pattern="C", n_layers=1, n_heads=1), 2000)
    assert config.d_model % 4 == 0
    assert dataclasses.replace(config, pattern="A").width_step == 2  # RoPE's
