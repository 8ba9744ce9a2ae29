"""Training-step throughput of whole models, per pattern, size and recurrent-kernel backend.

    python benchmarks/bench_models.py --out benchmarks/models.md [--with-fla] [--smoke]

One step = forward + cross-entropy + backward + AdamW (fused) on a fixed random batch, under bf16
autocast on CUDA. Shapes (non-embedding parameter counts are printed per row):
  small   4 layers, d=128, 4 heads, B=64, T=256 (about 0.8 M for A)
  20M     8 layers, d=448, 7 heads of 64 (Mamba2: 14 of 64), T=512 (B=64) and T=4096 (B=8)
The torch backend runs only at the small shape. With --with-fla, patterns holding G also run with
fla-core's chunk_gated_delta_rule in place of ours (after all other rows: fla autotunes for about a
minute per shape). Each row warms up (Triton compiles and tunes there), then times steps for about
--seconds. A config that fails prints its error and leaves its row marked; the others go on; rows
past --budget seconds are skipped; the table is rewritten after every row.
--smoke: CPU-sized shapes and 2 steps, to check the script runs.
"""

import argparse
import dataclasses
import datetime
import os
import subprocess
import sys
import time
import traceback

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # so that --smoke exercises the Triton path on CPU

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import architectures.gated_deltanet as gdn_layer  # noqa: E402
from architectures import LanguageModel, ModelConfig  # noqa: E402

PATTERNS = ["A", "G", "M", "GGGA", "MMMA"]
VOCAB = 64


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    batch: int
    seq_len: int
    torch_backend: bool  # also time backend="torch" (slow: only at small shapes)


SHAPES = [
    Shape("small", 128, 4, 4, 64, 256, True),
    Shape("20M", 448, 8, 7, 64, 512, False),
    Shape("20M", 448, 8, 7, 8, 4096, False),
]
SMOKE_SHAPES = [Shape("smoke", 16, 4, 2, 2, 16, True)]


def load_fla():
    """fla-core's GDN kernel wrapped to our signature, or None when fla is not installed."""
    try:
        import fla.ops.common.chunk_o as fla_chunk_o
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_gdn
    except ImportError:
        return None
    # fla 0.6.0 refuses its GDN backward on Hopper with triton < 3.7.1 (its issue #640); lift the guard.
    fla_chunk_o.TRITON_ABOVE_3_7_1 = True

    def call(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
             use_qk_l2norm_in_kernel=False, backend="triton"):
        dtype = v.dtype  # fla wants q, k, v and beta in one dtype
        return fla_gdn(q=q.to(dtype), k=k.to(dtype), v=v, g=g.float(), beta=beta.to(dtype), scale=scale,
                       initial_state=initial_state, output_final_state=output_final_state,
                       use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)

    return call


def plan(shapes, with_fla):
    """(shape, pattern, backend) rows in the order they run; fla's last, as its autotuning is slow."""
    rows, fla_rows = [], []
    for shape in shapes:
        for pattern in PATTERNS:
            rows.append((shape, pattern, "triton"))
            rows += [(shape, pattern, "torch")] if shape.torch_backend else []
            fla_rows += [(shape, pattern, "fla")] if with_fla and "G" in pattern else []
    return rows + fla_rows


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(shape, pattern, backend, device, warmup, seconds, max_steps):
    config = ModelConfig(
        vocab_size=VOCAB, d_model=shape.d_model, n_layers=shape.n_layers, pattern=pattern,
        n_heads=shape.n_heads, allow_neg_eigval=True, backend="torch" if backend == "torch" else "triton",
    )
    model = LanguageModel(config, torch.Generator().manual_seed(0)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (shape.batch, shape.seq_len + 1), generator=gen).to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        loss = step()
    sync(device)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} after warm-up")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    steps, start = 0, time.perf_counter()
    while steps < max_steps and (steps == 0 or time.perf_counter() - start < seconds):
        step()
        steps += 1
        if steps % 5 == 0:
            sync(device)
    sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"params": model.num_params(), "steps_s": steps / elapsed, "peak_gib": peak, "steps": steps}


def header(device, with_fla, fla_ok):
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        commit = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    import triton

    fla_note = "not requested"
    if with_fla:
        if fla_ok:
            import fla

            fla_note = f"fla-core {getattr(fla, '__version__', '?')}"
        else:
            fla_note = "requested, not importable"
    return (
        f"Device: {name}; date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; commit {commit}; "
        f"torch {torch.__version__}, triton {triton.__version__}; fla: {fla_note}.\n"
        f"One step: forward + backward + fused AdamW, bf16 autocast (on CUDA), vocab {VOCAB}, "
        f"allow_neg_eigval=True. `vs A`: steps/s over the A model's on the same shape and backend.\n"
    )


def table(results):
    lines = [
        "| shape | pattern | backend | B | T | params (non-emb) | steps/s | tokens/s | vs A | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    attention = {}
    for (shape, pattern, backend), r in results:
        if pattern == "A" and "error" not in r:
            attention[(shape, backend)] = r["steps_s"]
    for (shape, pattern, backend), r in results:
        lead = f"| {shape.name} | {pattern} | {backend} | {shape.batch} | {shape.seq_len} |"
        if "error" in r:
            lines.append(f"{lead} {r['error']} | | | | |")
            continue
        base = attention.get((shape, "triton" if backend == "fla" else backend))
        ratio = f"{r['steps_s'] / base:.2f}" if base else ""
        tokens = r["steps_s"] * shape.batch * shape.seq_len
        lines.append(f"{lead} {r['params'] / 1e6:.2f} M | {r['steps_s']:.1f} | {tokens:,.0f} | {ratio} | "
                     f"{r['peak_gib']:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Markdown file to write the table to")
    parser.add_argument("--with-fla", action="store_true", help="also time fla-core's GDN kernel")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU shapes, 2 steps")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed wall time per row")
    parser.add_argument("--budget", type=float, default=210.0,
                        help="wall seconds after which the remaining rows are skipped")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.smoke and device.type != "cuda":
        sys.exit("needs a CUDA GPU (use --smoke to check the script on CPU)")
    torch.backends.cuda.matmul.allow_tf32 = True
    fla_gdn = load_fla() if args.with_fla else None
    ours = gdn_layer.chunk_gated_delta_rule
    warmup, max_steps = (1, 2) if args.smoke else (5, 200)
    rows = plan(SMOKE_SHAPES if args.smoke else SHAPES, args.with_fla)
    results, start = [], time.perf_counter()
    for shape, pattern, backend in rows:
        label = f"{shape.name} T={shape.seq_len} {pattern} {backend}"
        if backend == "fla" and fla_gdn is None:
            results.append(((shape, pattern, backend), {"error": "not run: fla not importable"}))
            continue
        if time.perf_counter() - start > args.budget:
            skipped = {"error": f"not run: past --budget {args.budget:.0f} s"}
            results.append(((shape, pattern, backend), skipped))
            continue
        gdn_layer.chunk_gated_delta_rule = fla_gdn if backend == "fla" else ours
        try:
            r = time_steps(shape, pattern, backend, device, warmup, args.seconds, max_steps)
            print(f"{label}: {r['steps_s']:.1f} steps/s ({r['steps']} steps)", flush=True)
        except Exception as error:  # one failing config must not stop the others
            traceback.print_exc()
            first_line = str(error).splitlines()[0][:120].replace("|", "/") if str(error) else ""
            r = {"error": f"failed: {type(error).__name__}: {first_line}"}
            print(f"{label}: {r['error']}", flush=True)
        finally:
            gdn_layer.chunk_gated_delta_rule = ours
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results.append(((shape, pattern, backend), r))
        write(args.out, header(device, args.with_fla, fla_gdn is not None) + "\n" + table(results))
    text = header(device, args.with_fla, fla_gdn is not None) + "\n" + table(results)
    write(args.out, text)
    print(text)


def write(path, text):
    """Rewritten after every row, so that a run killed from outside still leaves its table."""
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
