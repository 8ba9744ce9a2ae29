import dataclasses

import pytest
import torch
import torch.nn.functional as F

from architectures import LanguageModel, ModelConfig

PATTERNS = ["A", "G", "M", "GA", "AG", "GGGA", "MMMA"]


def tiny(pattern, **fields):
    return ModelConfig(**{
        "vocab_size": 16, "d_model": 16, "n_heads": 2, "n_layers": len(pattern), "pattern": pattern,
        "ssd_state": 8, **fields,
    })


def build(config, seed=0):
    return LanguageModel(config, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_later_tokens_never_change_earlier_outputs(pattern):
    model = build(tiny(pattern))
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 16, (2, 80), generator=gen)  # longer than one 64-step kernel chunk
    with torch.no_grad():
        logits = model(inputs)
        for t in (0, 30, 63, 64, 78):
            changed = inputs.clone()
            changed[:, t + 1 :] = torch.randint(0, 16, (2, 79 - t), generator=gen)
            after = model(changed)
            torch.testing.assert_close(after[:, : t + 1], logits[:, : t + 1], atol=1e-6, rtol=1e-6)
            assert not torch.allclose(after[:, t + 1 :], logits[:, t + 1 :])


def test_blocks_follow_the_pattern():
    model = build(tiny("GGGA", n_layers=8))
    names = [type(block.mixer).__name__ for block in model.blocks]
    assert names == ["GatedDeltaNet"] * 3 + ["Attention"] + ["GatedDeltaNet"] * 3 + ["Attention"]


def test_param_count_and_state_by_hand():
    # One layer of each mixer, d = 16, 2 heads; mixer counts are derived in the mixers' tests.
    attention, gdn, mamba = 16 * 48 + 16 * 16, 2388, 2102
    mlp = 16 * 2 * 11 + 11 * 16  # mlp_ratio 1: SwiGLU hidden round(16 * 2 / 3) = 11
    model = build(tiny("AGM", mlp_ratio=1.0))
    norms = 3 * 2 * 16 + 16  # two per block, one final
    assert model.num_params() == attention + gdn + mamba + 3 * mlp + norms
    assert model.num_params(include_embedding=True) == model.num_params() + 16 * 16  # tied head
    untied = build(tiny("AGM", mlp_ratio=1.0, tie_embeddings=False))
    assert untied.num_params() == model.num_params()
    assert untied.num_params(include_embedding=True) == model.num_params() + 2 * 16 * 16
    kv, gdn_state, mamba_state = 2 * 50 * 16, 2 * 8 * 16 + 3 * 64, 2 * 16 * 8 + 3 * 48
    assert model.state_size(50) == kv + gdn_state + mamba_state


def test_tied_head_shares_the_embedding():
    model = build(tiny("A"))
    assert model.head.weight is model.embed.weight
    assert build(tiny("A", tie_embeddings=False)).head.weight is not build(tiny("A")).embed.weight


def test_initial_weights_are_a_function_of_the_generator_seed():
    config = tiny("GMA", n_layers=3)
    a, b, c = build(config, 5), build(config, 5), build(config, 6)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if "norm" not in name and not name.endswith(".D"):  # these start at constants
            assert not torch.equal(pa, pc), name


def test_residual_projections_start_smaller():
    model = build(tiny("A", d_model=64, n_heads=4, n_layers=8))
    assert model.blocks[0].mixer.out_proj.weight.std() < 0.5 * model.blocks[0].mixer.qkv_proj.weight.std()
    assert abs(model.embed.weight.std() - 0.02) < 0.002


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["A", "G", "M", "GGGA", "MMMA"])
def test_tiny_model_overfits_a_fixed_batch(pattern):
    config = tiny(pattern, d_model=32, n_layers=4 if len(pattern) == 4 else 2)
    model = build(config)
    gen = torch.Generator().manual_seed(2)
    inputs = torch.randint(0, 16, (4, 33), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(100):
        logits = model(inputs[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), inputs[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["A", "G", "M", "GMA"])
def test_triton_and_torch_backends_agree(pattern):
    # On CPU this runs under TRITON_INTERPRET=1 (tests/conftest.py): keep it tiny.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = tiny(pattern, d_model=8, n_heads=2, ssd_state=4, mlp_ratio=1.0, allow_neg_eigval=True)
    inputs = torch.randint(0, 16, (1, 11), generator=torch.Generator().manual_seed(3)).to(device)
    results = []
    for backend in ("torch", "triton"):
        model = build(dataclasses.replace(config, backend=backend)).to(device)
        logits = model(inputs)
        logits.pow(2).mean().backward()
        results.append((logits, {name: p.grad for name, p in model.named_parameters()}))
    (logits_torch, grads_torch), (logits_triton, grads_triton) = results
    torch.testing.assert_close(logits_triton, logits_torch, atol=1e-4, rtol=1e-4)
    for name, grad in grads_torch.items():
        torch.testing.assert_close(grads_triton[name], grad, atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize("pattern", ["A", "G", "M"])
def test_bf16_autocast_runs_and_stays_close_to_fp32(pattern):
    # The CPU stand-in for training under torch.autocast("cuda", dtype=torch.bfloat16).
    model = build(tiny(pattern))
    inputs = torch.randint(0, 16, (2, 20), generator=torch.Generator().manual_seed(4))
    reference = model(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(inputs)
    logits.float().pow(2).mean().backward()
    torch.testing.assert_close(logits.float(), reference, atol=2e-2, rtol=5e-2)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.parametrize("pattern", ["A", "G", "M", "GGGA", "MMMA"])
def test_cuda_bf16_step_agrees_across_backends(pattern):
    config = tiny(pattern, d_model=64, n_heads=4, ssd_state=16, n_layers=4, allow_neg_eigval=True)
    inputs = torch.randint(0, 16, (4, 300), generator=torch.Generator().manual_seed(5)).cuda()
    results = []
    for backend in ("torch", "triton"):
        model = build(dataclasses.replace(config, backend=backend)).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(inputs[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), inputs[:, 1:].flatten())
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        results.append((logits.float(), model.embed.weight.grad))
    for ours, reference in zip(results[1], results[0]):  # logits, then the embedding's gradient
        assert (ours - reference).norm() <= 0.03 * reference.norm()
