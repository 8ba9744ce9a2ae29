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

--table: the throughput table `sweeps.pack.estimate_gpu_seconds` reads (sweeps/throughput.json by
default, --table-out to write elsewhere): the training step of sweeps.train (a `sweeps.pack.Stack`
of K runs, bf16, per-run AdamW, device-side bookkeeping) on a fixed padded batch, captured as a CUDA
graph ("graph") and eager ("eager"), for A, G and M at the testbed's shapes (TABLE_SHAPES) and pack
sizes K, within --budget seconds; plus the seconds from process start to the first captured step
(CUDA context, imports, Triton compilation: a worker's start-up).
"""

import argparse
import dataclasses
import datetime
import os
import subprocess
import sys
import time
import traceback

STARTED = time.perf_counter()  # the table's start-up: from here to the first captured step

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

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

    def call(
        q,
        k,
        v,
        g,
        beta,
        scale=None,
        initial_state=None,
        output_final_state=False,
        use_qk_l2norm_in_kernel=False,
        backend="triton",
    ):
        dtype = v.dtype  # fla wants q, k, v and beta in one dtype
        return fla_gdn(
            q=q.to(dtype),
            k=k.to(dtype),
            v=v,
            g=g.float(),
            beta=beta.to(dtype),
            scale=scale,
            initial_state=initial_state,
            output_final_state=output_final_state,
            use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        )

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
        vocab_size=VOCAB,
        d_model=shape.d_model,
        n_layers=shape.n_layers,
        pattern=pattern,
        n_heads=shape.n_heads,
        allow_neg_eigval=True,
        backend="torch" if backend == "torch" else "triton",
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


@dataclasses.dataclass(frozen=True)
class TableShape:
    name: str
    target: int  # non-embedding parameters
    n_layers: int
    batch: int
    seq_len: int  # a bucket length of sweeps.train
    packs: tuple[int, ...]  # runs stacked (K)


TABLE_SHAPES = [
    TableShape("parity", 100_000, 2, 256, 48, (1, 4, 10, 20, 40)),
    TableShape("sbr", 400_000, 4, 128, 96, (1, 4, 12)),
    TableShape("small", 800_000, 4, 64, 256, (1, 4, 16)),
]
SMOKE_TABLE_SHAPES = [TableShape("smoke", 3000, 1, 4, 16, (1, 2))]


def time_stack(shape, pattern, k, mode, device, steps, profile=False):
    """Seconds per training step of a Stack of k runs on one fixed padded batch; with `profile`,
    also prints the device time of one eager step by kernel (torch.profiler)."""
    import numpy as np

    from architectures import size_for
    from sweeps.config import TrainSpec
    from sweeps.pack import Stack

    template = ModelConfig(vocab_size=VOCAB, pattern=pattern, n_layers=shape.n_layers, n_heads=4,
                           allow_neg_eigval=True)  # fmt: skip
    config = size_for(template, shape.target)
    train = TrainSpec(batch_size=shape.batch, steps=steps + 3, warmup=1, early_stop_acc=2.0)
    pool = torch.cuda.graph_pool_handle() if mode == "graph" else None
    stack = Stack(config, list(range(k)), np.full((steps + 3, k), 1e-3), train, 0, str(device),
                  capture=mode == "graph", pool=pool)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, VOCAB, (3, k, shape.batch, shape.seq_len), generator=gen, dtype=torch.int32)
    batch[2] = 1
    batch = batch.pin_memory() if device.type == "cuda" else batch
    for _ in range(2):  # eager warm-up, then the capture (and its first replay)
        stack.step(batch)
    sync(device)
    if stack.mode != mode:
        raise RuntimeError(f"capture failed: {stack.capture_error}")
    start = time.perf_counter()
    for _ in range(steps):
        stack.step(batch)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        stack.mode, stack.graphs = "eager", {}
        with profiler(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            stack.step(batch)
            sync(device)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25), flush=True)
    from architectures import count_params

    return {"pattern": pattern, "d_model": config.d_model, "n_layers": config.n_layers,
            "n_params": count_params(config), "batch": k * shape.batch, "seq_len": shape.seq_len,
            "pack": k, "tokens": k * shape.batch * shape.seq_len, "mode": mode,
            "step_seconds": round(seconds, 7)}  # fmt: skip


def throughput_table(args, device, started):
    """Rows for sweeps/throughput.json; see the module docstring."""
    import json

    shapes = SMOKE_TABLE_SHAPES if args.smoke else TABLE_SHAPES
    if args.table_shapes:
        shapes = [s for s in shapes if s.name in args.table_shapes.split(",")]
    plan = []
    for shape in shapes:
        for pattern in ("A", "G", "M"):
            plan += [(shape, pattern, k, "graph") for k in shape.packs]
            plan += [(shape, pattern, k, "eager") for k in (shape.packs[0], shape.packs[-1])]
    if args.profile:
        name, pattern, k = args.profile.split(",")
        (shape,) = [s for s in (SMOKE_TABLE_SHAPES if args.smoke else TABLE_SHAPES) if s.name == name]
        time_stack(shape, pattern, int(k), "graph" if device.type == "cuda" else "eager", device, 5, True)
        return
    rows, startup = [], None
    for shape, pattern, k, mode in plan:
        if time.perf_counter() - started > args.budget:
            print(f"past --budget: {shape.name} {pattern} K={k} {mode} and later rows not run", flush=True)
            break
        mode_here = mode if device.type == "cuda" else "eager"
        try:
            row = time_stack(shape, pattern, k, mode_here, device, 2 if args.smoke else 20)
        except Exception as error:  # one failing shape must not stop the others
            traceback.print_exc()
            print(
                f"{shape.name} {pattern} K={k} {mode}: failed: {type(error).__name__}: {error}"[:300],
                flush=True,
            )
            continue
        row["mode"] = mode
        if startup is None:
            startup = time.perf_counter() - started
        rows.append(row)
        print(f"{shape.name} {pattern} K={k} {mode}: {row['step_seconds'] * 1e3:.2f} ms/step, "
              f"{row['tokens'] / row['step_seconds'] / 1e6:.2f} M tokens/s", flush=True)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()  # fmt: skip
    table = {
        "device": name,
        "source": f"benchmarks/bench_models.py --table, {datetime.datetime.now(datetime.UTC):%Y-%m-%d}, "
        f"commit {commit}, torch {torch.__version__}",
        "startup_seconds": round(startup or 0.0, 1),
        "rows": rows,
    }
    with open(args.table_out, "w") as f:
        f.write(json.dumps(table, indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {args.table_out}")


def header(device, with_fla, fla_ok):
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
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
        lines.append(
            f"{lead} {r['params'] / 1e6:.2f} M | {r['steps_s']:.1f} | {tokens:,.0f} | {ratio} | "
            f"{r['peak_gib']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="Markdown file to write the table to")
    parser.add_argument("--table", action="store_true", help="measure the throughput table instead")
    parser.add_argument("--table-out", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "sweeps", "throughput.json"), help="where --table writes")  # fmt: skip
    parser.add_argument("--table-shapes", help="comma-separated TABLE_SHAPES names (default: all)")
    parser.add_argument("--profile", help="SHAPE,PATTERN,K: kernel times of one such step (with --table)")
    parser.add_argument("--with-fla", action="store_true", help="also time fla-core's GDN kernel")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU shapes, 2 steps")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed wall time per row")
    parser.add_argument(
        "--budget", type=float, default=210.0, help="wall seconds after which the remaining rows are skipped"
    )
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.smoke and device.type != "cuda":
        sys.exit("needs a CUDA GPU (use --smoke to check the script on CPU)")
    if args.table:
        throughput_table(args, device, STARTED)
        return
    if not args.out:
        parser.error("--out is needed (or --table)")
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
