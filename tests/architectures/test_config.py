import pytest

from architectures import MIXERS, ModelConfig


def test_pattern_is_tiled_over_depth():
    config = ModelConfig(vocab_size=8, n_layers=12, pattern="GGGA")
    assert config.layer_pattern == "GGGAGGGAGGGA"
    assert ModelConfig(vocab_size=8, n_layers=3, pattern="M").layer_pattern == "MMM"


def test_registry_binds_each_mixer_under_its_own_letter():
    assert {"A", "G", "M"} <= set(MIXERS)
    assert all(mixer.letter == letter for letter, mixer in MIXERS.items())


def test_unknown_letter_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"'X'.*allowed letters: A, G, M"):
        ModelConfig(vocab_size=8, n_layers=4, pattern="GGXA")


def test_empty_pattern_is_rejected():
    with pytest.raises(ValueError, match="pattern"):
        ModelConfig(vocab_size=8, pattern="")


def test_depth_must_hold_whole_repeats_of_the_pattern():
    with pytest.raises(ValueError, match=r"n_layers=6 .* len\(pattern\)=4"):
        ModelConfig(vocab_size=8, n_layers=6, pattern="GGGA")


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [("pos", "alibi", "rope"), ("backend", "cuda", "triton")],
)
def test_unknown_option_names_the_allowed_values(key, value, allowed):
    with pytest.raises(ValueError, match=f"{key}.*{allowed}.*{value}"):
        ModelConfig(vocab_size=8, **{key: value})


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"d_model": 30, "n_heads": 4}, "n_heads"),
        ({"d_model": 12, "n_heads": 4, "pattern": "A"}, "head dim"),
        ({"n_heads": 4, "ssd_groups": 3, "pattern": "M"}, "ssd_groups"),
        ({"vocab_size": 0}, "vocab_size"),
    ],
)
def test_inconsistent_sizes_are_rejected(fields, key):
    with pytest.raises(ValueError, match=key):
        ModelConfig(**{"vocab_size": 8, **fields})


def test_rope_head_dim_may_be_odd_without_attention_or_rope():
    assert ModelConfig(vocab_size=8, d_model=12, n_heads=4, pattern="G").head_dim == 3
    assert ModelConfig(vocab_size=8, d_model=12, n_heads=4, pattern="A", pos="none").head_dim == 3


def test_derived_widths():
    config = ModelConfig(vocab_size=8, d_model=128, n_heads=4, gdn_expand_v=1.5, mamba_expand=2)
    assert config.mlp_hidden == 341  # round(4 * 128 * 2 / 3)
    assert config.gdn_head_v_dim == 48
    assert config.mamba_head_dim == 64


def test_wide_mamba_layers_get_more_heads_of_at_most_the_papers_head_dim():
    narrow = ModelConfig(vocab_size=8, d_model=128, n_heads=4, pattern="M")
    assert (narrow.mamba_heads, narrow.mamba_head_dim) == (4, 64)
    wide = ModelConfig(vocab_size=8, d_model=448, n_heads=7, pattern="M")
    assert (wide.mamba_heads, wide.mamba_head_dim) == (14, 64)
    odd = ModelConfig(vocab_size=8, d_model=100, n_heads=2, pattern="M")  # inner 200 = 4 x 50
    assert (odd.mamba_heads, odd.mamba_head_dim) == (4, 50)


@pytest.mark.parametrize("backend", ["triton", "auto"])
def test_triton_gdn_head_dims_are_bounded(backend):
    ModelConfig(vocab_size=8, d_model=512, n_heads=4, pattern="G", backend=backend)  # value dim 256
    with pytest.raises(ValueError, match="n_heads=2"):
        ModelConfig(vocab_size=8, d_model=512, n_heads=2, pattern="G", backend=backend)
    ModelConfig(vocab_size=8, d_model=512, n_heads=2, pattern="G", backend="torch")


@pytest.mark.parametrize(
    ("key", "value"),
    [("n_layers", 2.0), ("pos", 1), ("allow_neg_eigval", 1), ("mlp_ratio", "4"), ("init_std", 0.0)],
)
def test_fields_are_type_and_range_checked(key, value):
    with pytest.raises(ValueError, match=key):
        ModelConfig(vocab_size=8, **{key: value})


def test_whole_floats_are_stored_as_floats_so_equal_configs_are_equal():
    assert ModelConfig(vocab_size=8, mlp_ratio=4) == ModelConfig(vocab_size=8, mlp_ratio=4.0)
    assert isinstance(ModelConfig(vocab_size=8, mlp_ratio=4).mlp_ratio, float)
