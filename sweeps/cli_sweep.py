"""`hxt train` (one run from flags) and `hxt sweep plan | run | status`.

Heavy imports (torch, the models) happen inside the commands, so that `hxt --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register_commands(app: typer.Typer) -> None:
    sweep_app = typer.Typer(no_args_is_help=True)
    app.add_typer(sweep_app, name="sweep", help="Plan, run and inspect sweeps.")
    app.command("train")(train)
    sweep_app.command("plan")(plan)
    sweep_app.command("run")(run)
    sweep_app.command("status")(status)


def _toml_value(value: str) -> str:
    """A flag's text as a TOML value: booleans and numbers as such, anything else as a string."""
    if value in ("true", "false"):
        return value
    try:
        float(value)
    except ValueError:
        return json.dumps(value)
    return value


def train(
    task: str = typer.Option("parity", help="Task name (see `hxt tasks list`)."),
    pattern: str = typer.Option("G", help="Mixer pattern, e.g. A, G, M, GGGA."),
    neg_eigval: bool = typer.Option(True, "--neg-eigval/--no-neg-eigval", help="Allow negative eigenvalues."),
    size: int = typer.Option(20_000, help="Target non-embedding parameter count."),
    lr: float = typer.Option(3e-3, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Run seed (training data, evaluation data and initial weights)."),
    steps: int = typer.Option(500, help="Optimiser steps (at most; early stop may end sooner)."),
    batch_size: int = typer.Option(32, help="Training batch size."),
    warmup: int = typer.Option(50, help="Warmup steps."),
    n_layers: int = typer.Option(2, help="Layers (a multiple of the pattern length)."),
    n_heads: int = typer.Option(2, help="Heads."),
    param: list[str] = typer.Option([], help="Task structural parameter KEY=VALUE (repeatable)."),
    train_range: list[str] = typer.Option([], "--train", help="Train range KNOB=LO:HI (repeatable)."),
    eval_range: list[str] = typer.Option([], "--eval", help="Eval range KNOB=LO:HI (repeatable)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    kernel_backend: str = typer.Option("auto", help="auto | torch | triton."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
) -> None:
    """Train and evaluate one run from flags, and print its metrics."""
    from sweeps.config import parse_sweep
    from sweeps.grid import expand
    from sweeps.runner import check_sizes
    from sweeps.train import run as run_one

    def table(items: list[str], flag: str, ranged: bool) -> str:
        entries = []
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
            if ranged:
                lo, _, hi = value.partition(":")
                value = f"[{lo}, {hi or lo}]"
            else:
                value = _toml_value(value)
            entries.append(f"{key} = {value}")
        return "{ " + ", ".join(entries) + " }"

    text = "\n".join(
        [
            'name = "train"',
            f"sizes = [{size}]",
            f"lrs = [{lr!r}]",
            f"seeds = [{seed}]",
            f'device = "{device}"',
            f'kernel_backend = "{kernel_backend}"',
            "[[arch]]",
            f"pattern = {json.dumps(pattern)}",
            f"neg_eigval = {str(neg_eigval).lower()}",
            "[model]",
            f"n_layers = {n_layers}",
            f"n_heads = {n_heads}",
            "[train]",
            f"steps = {steps}",
            f"batch_size = {batch_size}",
            f"warmup = {warmup}",
            "[[task]]",
            f"name = {json.dumps(task)}",
            f"params = {table(param, '--param', False)}",
            f"train = {table(train_range, '--train', True)}",
            f"eval = {table(eval_range, '--eval', True)}",
        ]
    )
    config = parse_sweep(text, source="hxt train flags")
    check_sizes(config)
    (spec,) = expand(config)
    result = run_one({k: v for k, v in spec.items() if k != "run_id"})
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(
        f"run {spec['run_id']}: {result['status']}" + (f"  ({result['error']})" if result["error"] else "")
    )
    if result["status"] == "failed":
        raise typer.Exit(1)
    typer.echo(
        f"params {result['n_params']} non-embedding (d_model {result['d_model']}, "
        f"{result['n_layers']} layers), state {result['state_size']}, "
        f"device {result['device']}, {result['wall_seconds']:.1f} s"
    )
    typer.echo(
        f"steps {result['steps']}, final loss {result['final_loss']}, train acc {result['train_acc']}, "
        f"solved at {result['solved_step']}"
    )
    for row in result["evals"]:
        typer.echo(
            f"  {row['knob']}={row['value']:<6} {'in ' if row['in_range'] else 'out'} {row['slice']:<5} "
            f"token acc {row['token_acc']:.3f}  seq acc {row['seq_acc']:.3f}  "
            f"scaled {row['scaled_acc']:.3f}  loss {row['loss']:.3f}  (n={row['n']})"
        )


def plan(file: Path = typer.Argument(..., help="A sweep file (TOML).")) -> None:
    """Validate a sweep file and print its grid (run count, model widths, estimated compute)."""
    from rich.console import Console
    from rich.table import Table

    from sweeps.config import load_sweep
    from sweeps.grid import expand, sweep_hash
    from sweeps.runner import check_sizes
    from synthetic_tasks import make_task

    config, _ = load_sweep(file)
    widths = check_sizes(config)
    runs = expand(config)
    console = Console()
    console.print(
        f"sweep [bold]{config.name}[/bold] (config {sweep_hash(runs)}): {len(runs)} runs = "
        f"{len(config.tasks)} tasks x {len(config.archs)} architectures x {len(config.sizes)} sizes x "
        f"{len(config.lrs)} learning rates x {len(config.seeds)} seeds"
    )
    archs = Table("architecture", "pattern", "neg. eigenvalues", *(f"d_model @ {s:,}" for s in config.sizes))
    for arch in config.archs:
        archs.add_row(
            arch.name, arch.pattern, str(arch.neg_eigval), *(str(widths[arch.name, s]) for s in config.sizes)
        )
    console.print(archs)
    tasks = Table("task", "params", "train range", "eval axes", "tokens/step", "train PFLOP (max)")
    total = 0.0
    per_task_runs = len(config.archs) * len(config.lrs) * len(config.seeds)
    for spec in config.tasks:
        task = make_task(spec.name, **spec.params_dict)
        batch = task.sample(0, min(config.train.batch_size, 64), **dict(spec.train_range))
        tokens = batch.inputs.shape[1] * config.train.batch_size
        # 6 N D for the training steps (early stopping only lowers it); evaluation is not counted.
        flops = sum(6 * size * tokens * config.train.steps * per_task_runs for size in config.sizes)
        total += flops
        tasks.add_row(
            spec.name,
            json.dumps(spec.params_dict),
            ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in spec.train_range if lo != hi),
            ", ".join(spec.eval_axes),
            f"{tokens:,}",
            f"{flops / 1e15:.3g}",
        )
    console.print(tasks)
    console.print(
        f"training compute at most {total / 1e15:.3g} PFLOP (6·N·tokens, non-embedding N); "
        f"{config.train.steps} steps x batch {config.train.batch_size}, device {config.device}, "
        f"kernels {config.kernel_backend}"
    )


def run(
    file: Path = typer.Argument(..., help="A sweep file (TOML)."),
    backend: str = typer.Option("local", help="local | ray."),
    workers: int = typer.Option(None, help="Runs at once (default: GPUs x slots, else CPU cores)."),
    slots_per_gpu: int = typer.Option(None, help="Runs sharing one GPU (default 6)."),
    out: Path = typer.Option(None, help="Sweep directory holding the store (default: runs/<name>)."),
    address: str = typer.Option(None, help="Ray cluster to join, e.g. 'auto' (ray backend only)."),
) -> None:
    """Run a sweep (skipping finished runs), with a live progress bar; results go to OUT/hxt.sqlite."""
    from sweeps.config import load_sweep
    from sweeps.runner import run_sweep

    if out is None:
        out = Path("runs") / load_sweep(file)[0].name
    summary = run_sweep(
        file, out, backend=backend, workers=workers, slots_per_gpu=slots_per_gpu, address=address
    )
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    typer.echo(f"{out}: {summary.total} runs ({summary.skipped} already finished); now {counts}")
    if summary.counts.get("failed"):
        typer.echo("some runs failed; `hxt sweep status` shows their errors", err=True)


def status(sweep_dir: Path = typer.Argument(..., help="A sweep directory (holding hxt.sqlite).")) -> None:
    """Summarise a sweep's store: runs by status, accuracy per task and architecture, errors."""
    from rich.console import Console
    from rich.table import Table

    from sweeps.store import Store

    console = Console()
    with Store(sweep_dir, create=False) as store:
        meta = store.sweep_meta()
        counts = store.counts()
        console.print(
            f"sweep [bold]{meta.get('name')}[/bold] (config {meta.get('config_hash')}, commit "
            f"{meta.get('git_commit') or '?'}, hxt {meta.get('hxt_version')})"
        )
        console.print("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        rows = store.db.execute(
            """
            SELECT r.task, r.arch, COUNT(DISTINCT r.run_id),
                   SUM(r.status = 'done'), AVG(e_in.acc), AVG(e_out.acc)
            FROM runs r
            LEFT JOIN (SELECT run_id, AVG(token_acc) AS acc FROM evals
                       WHERE slice = 'all' AND in_range = 1 GROUP BY run_id) e_in ON e_in.run_id = r.run_id
            LEFT JOIN (SELECT run_id, AVG(token_acc) AS acc FROM evals
                       WHERE slice = 'all' AND in_range = 0 GROUP BY run_id) e_out ON e_out.run_id = r.run_id
            GROUP BY r.task, r.arch ORDER BY r.task, MIN(r.rowid)
            """
        ).fetchall()
        table = Table("task", "arch", "runs", "done", "token acc in range", "token acc beyond")
        fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        for task, arch, n, done, acc_in, acc_out in rows:
            table.add_row(task, arch, str(n), str(done or 0), fmt(acc_in), fmt(acc_out))
        console.print(table)
        failed = store.db.execute(
            "SELECT run_id, arch, task, attempts, error FROM runs WHERE status IN ('failed', 'diverged')"
        ).fetchall()
        for rid, arch, task, attempts, error in failed:
            last = (error or "").strip().splitlines()[-1:] or [""]
            console.print(
                f"[red]{rid}[/red] {task} {arch} (attempts {attempts}): {last[0]}",
                markup=True,
                highlight=False,
            )
