import pytest
import torch

from architectures import LanguageModel, ModelConfig, count_params, size_for


@pytest.mark.parametrize("target", [100_000, 1_000_000, 10_000_000])
@pytest.mark.parametrize("pattern", ["A", "G", "M", "GGGA", "MMMA"])
def test_study_patterns_land_within_five_percent(pattern, target):
    config = size_for(pattern, target, vocab_size=64, n_layers=4, n_heads=4, allow_neg_eigval=True)
    assert config.pattern == pattern and config.n_layers == 4 and config.allow_neg_eigval
    assert 1 <= config.n_heads <= 4
    assert abs(count_params(config) - target) <= 0.05 * target


def test_requested_heads_are_kept_when_they_fit():
    config = size_for("GGGA", 1_000_000, vocab_size=64, n_layers=4, n_heads=4)
    assert config.n_heads == 4


def test_count_without_building_matches_the_model():
    config = ModelConfig(vocab_size=50, d_model=24, n_layers=4, pattern="GMAA", n_heads=3, ssd_state=8,
                         tie_embeddings=False)
    model = LanguageModel(config)
    assert count_params(config) == model.num_params()
    assert count_params(config, include_embedding=True) == model.num_params(include_embedding=True)
    assert all(p.device == torch.device("cpu") for p in model.parameters())


def test_unreachable_target_is_an_error():
    with pytest.raises(ValueError, match="target_params=10"):
        size_for("GGGA", 10, vocab_size=64)
    with pytest.raises(ValueError, match="target_params"):
        size_for("A", 0, vocab_size=64)
