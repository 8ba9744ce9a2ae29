"""The table of docs/mamba2-init.md: Mamba2's decay at initialisation on parity inputs.

    .venv/bin/python docs/mamba2_init_probe.py

For the first Mamba2 layer of R1's model (100 k parameters, 2 layers, 2 heads, negative eigenvalues)
under each initialisation of r1_parity's arms, feeds a batch of parity strings and reports, over all
heads and positions: the eigenvalue 2 exp(-A dt) - 1 (its range and the share below 0), how far the
two bit tokens move it apart (mean |lambda(1) - lambda(0)| per head), and sigmoid(dt pre-activation),
the factor by which softplus passes a gradient on to the dt projection.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from architectures import LanguageModel, ModelConfig, size_for  # noqa: E402
from synthetic_tasks import make_task  # noqa: E402

LARGE_DT = dict(mamba_A_min=1.0, mamba_A_max=2.0, mamba_dt_min=0.3, mamba_dt_max=0.7)
ARMS = {  # r1_parity's Mamba2 arms with negative eigenvalues
    "M (paper)": {},
    "M-largedt-paperproj": LARGE_DT,
    "M-largedt": {**LARGE_DT, "mamba_dt_std": 0.5},
}


def probe(fields: dict, seeds=range(3)) -> dict:
    task = make_task("parity")
    template = ModelConfig(vocab_size=task.vocab_size, pattern="M", allow_neg_eigval=True, n_layers=2,
                           n_heads=2, backend="torch", **fields)
    config = size_for(template, 100_000)
    lams, gaps, gates = [], [], []
    for seed in seeds:
        model = LanguageModel(config, torch.Generator().manual_seed(seed))
        batch = task.sample(seed, 64, length=(3, 40))
        inputs = torch.as_tensor(batch.inputs, dtype=torch.long)
        block = model.blocks[0]
        with torch.no_grad():
            x = block.mixer_norm(model.embed(inputs))
            mixer = block.mixer
            pre = mixer.in_proj(x).split(mixer.split, dim=-1)[2] + mixer.dt_bias  # [B, T, H]
            lam = 2 * torch.exp(-mixer.A_log.exp() * F.softplus(pre)) - 1
        bits = torch.as_tensor(batch.inputs)
        one, zero = bits == task.ONE, bits == task.ZERO
        lams.append(lam[one | zero])
        gaps.append((lam[one].mean(0) - lam[zero].mean(0)).abs())
        gates.append(torch.sigmoid(pre[one | zero]))
    lam, gap, gate = torch.cat(lams), torch.cat(gaps), torch.cat(gates)
    return {
        "d_model": config.d_model,
        "lambda range": f"{lam.min():.2f} to {lam.max():.2f}",
        "share < 0": f"{(lam < 0).float().mean():.2f}",
        "|lambda(1) - lambda(0)|": f"{gap.mean():.3f}",
        "softplus gate": f"{gate.mean():.3f}",
    }


def main() -> None:
    rows = {name: probe(fields) for name, fields in ARMS.items()}
    keys = list(next(iter(rows.values())))
    print("| arm | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
