"""`hxt train` (one run from flags) and `hxt sweep plan | run | status`.

Heavy imports (torch, the models) happen inside the commands, so that `hxt --help` stays fast.
"""

from __future__ import annotations

import json
import signal
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


def _flag_table(items: list[str], flag: str, ranged: bool) -> str:
    """KEY=VALUE flags as an inline TOML table; with `ranged`, VALUE is an integer or LO,HI."""
    entries = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        if ranged:
            parts = [part.strip() for part in value.split(",")]
            if len(parts) > 2 or not all(part.lstrip("-").isdigit() for part in parts):
                raise ValueError(
                    f"{flag} {item!r}: a knob takes an integer or a range LO,HI of integers "
                    f"(as in `hxt tasks show`), e.g. {key}=3,40"
                )
            value = f"[{parts[0]}, {parts[-1]}]"
        else:
            value = _toml_value(value)
        entries.append(f"{json.dumps(key)} = {value}")
    return "{ " + ", ".join(entries) + " }"


def train(
    task: str = typer.Option("parity", help="Task name (see `hxt tasks list`)."),
    pattern: str = typer.Option("G", help="Mixer pattern, e.g. A, G, M, GGGA."),
    neg_eigval: bool = typer.Option(True, "--neg-eigval/--no-neg-eigval", help="Allow negative eigenvalues."),
    size: int = typer.Option(20_000, help="Target non-embedding parameter count."),
    lr: float = typer.Option(3e-3, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Run seed (training data, evaluation data and initial weights)."),
    steps: int = typer.Option(None, help="Optimiser steps (default: a sweep file's train.steps)."),
    batch_size: int = typer.Option(None, help="Training batch size (default: a sweep file's)."),
    warmup: int = typer.Option(None, help="Warmup steps (default: a sweep file's)."),
    n_layers: int = typer.Option(None, help="Layers, a multiple of the pattern length."),
    n_heads: int = typer.Option(None, help="Heads (default: ModelConfig's)."),
    model: list[str] = typer.Option([], help="Any ModelConfig field KEY=VALUE, e.g. pos=none (repeatable)."),
    param: list[str] = typer.Option([], help="Task structural parameter KEY=VALUE (repeatable)."),
    train_range: list[str] = typer.Option([], "--train", help="Train range KNOB=LO,HI or KNOB=V."),
    eval_range: list[str] = typer.Option([], "--eval", help="Eval range KNOB=LO,HI or KNOB=V."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
) -> None:
    """Train and evaluate one run from flags, and print its metrics.

    The flags make a one-run sweep file, so every default is a sweep file's default and every
    check is the same.
    """
    from sweeps.config import parse_sweep

    model_items = [f"{k}={v}" for k, v in (("n_layers", n_layers), ("n_heads", n_heads)) if v is not None]
    train_items = [
        f"{key}={value}"
        for key, value in (("steps", steps), ("batch_size", batch_size), ("warmup", warmup))
        if value is not None
    ]
    text = "\n".join(
        [
            'name = "train"',
            f"sizes = [{size}]",
            f"lrs = [{lr!r}]",
            f"seeds = [{seed}]",
            f"device = {json.dumps(device)}",
            f"model = {_flag_table(model_items + list(model), '--model', False)}",
            f"train = {_flag_table(train_items, '--train', False)}",
            "[[arch]]",
            f"pattern = {json.dumps(pattern)}",
            f"neg_eigval = {str(neg_eigval).lower()}",
            "[[task]]",
            f"name = {json.dumps(task)}",
            f"params = {_flag_table(param, '--param', False)}",
            f"train = {_flag_table(train_range, '--train', True)}",
            f"eval = {_flag_table(eval_range, '--eval', True)}",
        ]
    )
    config = parse_sweep(text, source="hxt train flags")
    from sweeps.grid import check_runs, expand
    from sweeps.train import run as run_one

    (spec,) = expand(config)
    check_runs([spec])
    result = run_one(spec)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        _print_result(spec.run_id, result)
    if result["status"] != "done":
        raise typer.Exit(1)


def _print_result(run_id: str, result: dict) -> None:
    # A failed run's error is a traceback: its last line here, the whole of it with --json.
    error = [result["error"]]
    if result["status"] == "failed":
        error = (result["error"] or "").strip().splitlines()[-1:]
    typer.echo(f"run {run_id}: {result['status']}" + (f"  ({error[0]})" if error and error[0] else ""))
    if result["status"] == "failed":
        return
    typer.echo(
        f"params {result['n_params']} non-embedding (d_model {result['d_model']}, "
        f"{result['n_layers']} layers), state {result['state_size']}, "
        f"device {result['device']}, {result['wall_seconds']:.1f} s"
    )
    typer.echo(
        f"steps {result['steps']}, final loss {result['final_loss']}, train acc {result['train_acc']}, "
        f"solved at {result.get('solved_step')}"
    )
    for row in result["evals"]:
        typer.echo(
            f"  {row['knob']}={row['value']:<6} {'in ' if row['in_range'] else 'out'} {row['slice']:<5} "
            f"token acc {row['token_acc']:.3f}  seq acc {row['seq_acc']:.3f}  "
            f"scaled {row['scaled_acc']:.3f}  loss {row['loss']:.3f}  (n={row['n']})"
        )


def plan(
    file: Path = typer.Argument(..., help="A sweep file (TOML)."),
    pack: int = typer.Option(16, help="Pack size the GPU estimate assumes (as hxt sweep run --pack)."),
) -> None:
    """Validate a sweep file as every worker will, and print its grid (run count, model widths,
    estimated compute)."""
    from sweeps.config import load_sweep

    config, _ = load_sweep(file)
    from rich.console import Console
    from rich.table import Table

    from sweeps.grid import check_runs, expand
    from sweeps.store import runs_hash
    from synthetic_tasks import make_task

    runs = expand(config)
    sized = check_runs(runs)
    console = Console()
    console.print(
        f"sweep [bold]{config.name}[/bold] (config {runs_hash(r.run_id for r in runs)}): {len(runs)} runs = "
        f"{len(config.tasks)} tasks x {len(config.archs)} architectures x {len(config.sizes)} sizes x "
        f"{len(config.lrs)} learning rates x {len(config.seeds)} seeds"
    )
    archs = Table(
        "architecture", "pattern", "neg. eigenvalues", "own model fields",
        *(f"d_model @ {s:,}" for s in config.sizes),
    )
    for arch in config.archs:
        archs.add_row(
            arch.name,
            arch.pattern,
            str(arch.neg_eigval),
            ", ".join(f"{k}={v}" for k, v in arch.model) or "-",
            *(f"{sized[arch.name, s].d_model} ({sized[arch.name, s].n_heads} heads)" for s in config.sizes),
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
    from sweeps.pack import estimate_gpu_seconds

    try:
        console.print(f"GPU time with --pack {pack}: {estimate_gpu_seconds(runs, pack)}", highlight=False)
    except ValueError as error:
        console.print(f"GPU time: no estimate ({error})", highlight=False)
    model = ", ".join(f"{k}={v}" for k, v in config.model) or "ModelConfig defaults"
    console.print(
        f"training compute at most {total / 1e15:.3g} PFLOP (6·N·tokens, non-embedding N); "
        f"{config.train.steps} steps x batch {config.train.batch_size}, device {config.device}; "
        f"\\[model] {model}"
    )


def run(
    file: Path = typer.Argument(..., help="A sweep file (TOML)."),
    backend: str = typer.Option("local", help="local | ray."),
    workers: int = typer.Option(None, help="Runs at once (default: GPUs x slots, else CPU cores)."),
    slots_per_gpu: int = typer.Option(None, help="Workers sharing one GPU (default 6; 2 when packing)."),
    pack: int = typer.Option(
        None, help="Runs trained together as one stacked model (default 16 on GPUs, 1 on CPU)."
    ),
    out: Path = typer.Option(None, help="Sweep directory holding the store (default: runs/<name>)."),
    address: str = typer.Option(None, help="Ray cluster to join, e.g. 'auto' (ray backend only)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress: print only the final summary."),
    summary_every: float = typer.Option(
        60.0, help="Seconds between summary lines when the output is not a terminal."
    ),
    time_limit: float = typer.Option(
        None,
        help="Stop after this many seconds, runs in training back to pending; when packing on GPUs, "
        "start only packs whose estimated GPU time fits the time left.",
    ),
) -> None:
    """Run a sweep (skipping finished runs); results go to OUT/hxt.sqlite.

    On a terminal a live bar shows progress; in a log (nohup, a batch job) each finished run gets a
    line, with a summary line every --summary-every seconds. A sweep directory may grow: a file that
    adds tasks, architectures, sizes, learning rates or seeds runs only the new runs. Ctrl-C or
    SIGTERM stops the workers and puts their runs back to pending (exit 130 / 143); a sweep with
    failed runs exits 1. With --time-limit, a sweep the limit ends early says how many runs are
    left pending and exits 0 (or 1 with failed runs): run the same command to continue.
    """
    from sweeps.config import load_sweep
    from sweeps.runner import run_sweep

    if summary_every <= 0:
        raise ValueError(f"--summary-every must be > 0 seconds, got {summary_every}")
    if out is None:
        out = Path("runs") / load_sweep(file)[0].name
    summary = run_sweep(
        file,
        out,
        backend=backend,
        workers=workers,
        slots_per_gpu=slots_per_gpu,
        pack=pack,
        address=address,
        progress="none" if quiet else "auto",
        summary_every=summary_every,
        time_limit=time_limit,
    )
    if summary.interrupted is not None:
        name = signal.Signals(summary.interrupted).name
        typer.echo(
            f"{out}: stopped by {name}; {summary.requeued} interrupted runs put back to pending, "
            f"{summary.counts.get('done', 0)} of {summary.total} done; run the same command to continue",
            err=True,
        )
        raise typer.Exit(128 + summary.interrupted)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    grown = f"; the directory holds {summary.in_store} runs" if summary.in_store > summary.total else ""
    typer.echo(f"{out}: {summary.total} runs ({summary.skipped} already finished); now {counts}{grown}")
    if summary.time_limited:
        held = ""
        if summary.held:
            held = f" ({summary.held} not started: their packs' estimated GPU time did not fit)"
        typer.echo(
            f"{out}: time limit of {time_limit:g} s reached; {summary.counts.get('pending', 0)} runs left "
            f"pending{held}; run the same command to continue",
            err=True,
        )
    failed = summary.counts.get("failed", 0)
    if failed:
        typer.echo(f"{failed} runs failed; `hxt sweep status {out}` shows their errors", err=True)
        raise typer.Exit(1)


_GROUPS = {"task": "r.task", "arch": "r.arch", "size": "r.target_params", "lr": "r.lr", "seed": "r.seed"}


def status(
    sweep_dir: Path = typer.Argument(..., help="A sweep directory (holding hxt.sqlite)."),
    by: str = typer.Option(
        None, help=f"Extra table grouped by these columns, comma-separated, from {', '.join(_GROUPS)}."
    ),
) -> None:
    """Summarise a sweep's store (read-only): the driver, runs by status, accuracy per task and
    architecture, per size and per learning rate, and the errors of failed runs."""
    import sqlite3

    from rich.console import Console

    from sweeps.lock import driver_state
    from sweeps.store import Store

    groups = [g.strip() for g in by.split(",")] if by else []
    unknown = [g for g in groups if g not in _GROUPS]
    if unknown or (by is not None and not groups):
        raise ValueError(
            f"--by {by!r}: unknown column {unknown[0] if unknown else ''!r}; allowed: {', '.join(_GROUPS)}"
        )
    with Store.read_only(sweep_dir) as store:
        try:
            _print_status(Console(), store, driver_state(store.dir), groups)
        except sqlite3.DatabaseError as error:
            raise ValueError(f"{str(store.path)!r} is not a readable hxt store ({error})") from None


def _print_status(console, store, driver, groups: list[str]) -> None:
    meta = store.sweep_meta()
    counts = store.counts()
    configs = store.configs()
    files = f", {len(configs)} sweep files" if len(configs) > 1 else ""
    console.print(
        f"sweep [bold]{meta.get('name')}[/bold] (config {meta.get('config_hash')}{files}, commit "
        f"{meta.get('git_commit') or '?'}, hxt {meta.get('hxt_version')})",
        highlight=False,
    )
    state, holder = driver
    running = counts.get("running", 0)
    if state == "alive":
        console.print(
            f"driver: running ({holder.describe() if holder else 'holder unknown'})", highlight=False
        )
    elif state == "gone":
        stale = f"; its {running} runs marked running are not running" if running else ""
        console.print(
            f"driver: none (the last one, {holder.describe()}, is gone{stale}; the next "
            f"`hxt sweep run` re-queues them)",
            highlight=False,
        )
    else:
        console.print("driver: none", highlight=False)
    parts = [f"{n} {s}" for s, n in sorted(counts.items()) if s != "running"]
    if running:
        parts.append(f"{running} running" + ("" if state == "alive" else " (stale)"))
    console.print("runs: " + (", ".join(parts) or "none"), highlight=False)
    tables = [("task", "arch")]
    for axis in ("size", "lr"):  # the grid's other axes, where the sweep has several values
        (values,) = store.db.execute(f"SELECT COUNT(DISTINCT {_GROUPS[axis]}) FROM runs r").fetchone()
        if values > 1:
            tables.append((axis,))
    if groups:
        tables.append(tuple(groups))
    for columns in tables:
        console.print(_group_table(store, columns))
    failed = store.db.execute(
        "SELECT run_id, arch, task, target_params, lr, seed, attempts, error FROM runs "
        "WHERE status IN ('failed', 'diverged') ORDER BY rowid"
    ).fetchall()
    for rid, arch, task, size, lr, seed, attempts, error in failed:
        last = (error or "").strip().splitlines()[-1:] or [""]
        console.print(
            f"[red]{rid}[/red] {task} {arch} {size} lr {lr:g} seed {seed} (attempts {attempts}): {last[0]}",
            markup=True,
            highlight=False,
        )


def _group_table(store, columns: tuple[str, ...]):
    from rich.table import Table

    keys = ", ".join(_GROUPS[c] for c in columns)
    order = ", ".join("MIN(r.rowid)" if c == "arch" else _GROUPS[c] for c in columns)  # archs as declared
    rows = store.db.execute(
        f"""
        SELECT {keys}, COUNT(*), SUM(r.status = 'done'), SUM(r.status IN ('failed', 'diverged')),
               SUM(r.status IN ('pending', 'running')), AVG(e_in.acc), AVG(e_out.acc)
        FROM runs r
        LEFT JOIN (SELECT run_id, AVG(token_acc) AS acc FROM evals
                   WHERE slice = 'all' AND in_range = 1 GROUP BY run_id) e_in ON e_in.run_id = r.run_id
        LEFT JOIN (SELECT run_id, AVG(token_acc) AS acc FROM evals
                   WHERE slice = 'all' AND in_range = 0 GROUP BY run_id) e_out ON e_out.run_id = r.run_id
        GROUP BY {keys} ORDER BY {order}
        """
    ).fetchall()
    table = Table(*columns, "runs", "done", "failed/div.", "to do", "token acc in range", "token acc beyond")
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for row in rows:
        *key, n, done, bad, todo, acc_in, acc_out = row
        cells = [f"{k:g}" if isinstance(k, float) else str(k) for k in key]
        table.add_row(
            *cells, str(n), str(done or 0), str(bad or 0), str(todo or 0), fmt(acc_in), fmt(acc_out)
        )
    return table
