import pytest
import torch

from architectures import LanguageModel, ModelConfig, count_params, size_for


def template(pattern, **fields):
    return ModelConfig(**{"vocab_size": 64, "pattern": pattern, "n_layers": 4, "n_heads": 4, **fields})


@pytest.mark.parametrize("target", [100_000, 1_000_000, 10_000_000])
@pytest.mark.parametrize("pattern", ["A", "G", "M", "GGGA", "MMMA"])
def test_study_patterns_land_within_five_percent(pattern, target):
    config = size_for(template(pattern, allow_neg_eigval=True, pos="none"), target)
    assert config.pattern == pattern and config.n_layers == 4 and config.allow_neg_eigval
    assert config.pos == "none" and 1 <= config.n_heads <= 4
    assert abs(count_params(config) - target) <= 0.05 * target


@pytest.mark.parametrize(
    ("pattern", "n_layers", "n_heads", "target"),
    [("GGGA", 4, 4, 60_000), ("A", 2, 2, 5_000), ("GA", 2, 2, 9_000), ("G", 2, 4, 4_000), ("M", 1, 4, 5_000)],
)
def test_small_targets_the_width_steps_miss_are_reached_through_the_mlp(pattern, n_layers, n_heads, target):
    config = size_for(template(pattern, n_layers=n_layers, n_heads=n_heads), target)
    assert abs(count_params(config) - target) <= 0.05 * target
    assert 0.5 <= config.mlp_ratio / 4.0 <= 2.0 and config.mlp_hidden == round(
        config.mlp_ratio * config.d_model * 2 / 3
    )


def test_requested_heads_and_mlp_are_kept_when_they_fit():
    config = size_for(template("GGGA"), 1_000_000)
    assert config.n_heads == 4 and config.mlp_ratio == 4.0


def test_count_without_building_matches_the_model():
    config = ModelConfig(
        vocab_size=50, d_model=24, n_layers=4, pattern="GMAA", n_heads=3, ssd_state=8, tie_embeddings=False
    )
    model = LanguageModel(config)
    assert count_params(config) == model.num_params()
    assert count_params(config, include_embedding=True) == model.num_params(include_embedding=True)
    assert all(p.device == torch.device("cpu") for p in model.parameters())


def test_unreachable_target_is_an_error_naming_sizes_that_work():
    with pytest.raises(ValueError, match=r"target_params=10;.*nearest reachable sizes: \d"):
        size_for(template("GGGA"), 10)
    with pytest.raises(ValueError, match="target_params"):
        size_for(template("A"), 0)
