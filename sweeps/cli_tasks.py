"""`hxt tasks list`, `hxt tasks show` and `hxt tasks export`: the task library from the command line."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from synthetic_tasks import TASKS, make_task

app = typer.Typer(no_args_is_help=True)

# `show` and `export` take a task name, then knobs and structural parameters as options of their own
# (`_parse_extra_options`), which Click must pass through.
_TASK_NAME = typer.Argument(..., help="Task name (see `hxt tasks list`).")
_EXTRA_OPTIONS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _fmt_range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _parse_value(text: str):
    """``5`` -> 5, ``0.5`` -> 0.5, ``3,40`` -> (3, 40), ``true``/``false`` -> bool, else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    parts = [part.strip() for part in text.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
    if len(numbers) == 1:
        return numbers[0]
    if len(numbers) == 2:
        return numbers[0], numbers[1]
    raise ValueError(f"value {text!r} is neither an int nor a lo,hi range")


def _parse_extra_options(args: list[str]) -> dict:
    """``--key value`` / ``--key=value`` pairs (dashes in keys become underscores)."""
    options = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"unexpected argument {arg!r}; options look like --KNOB VALUE or --PARAM VALUE")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ValueError(f"option {arg!r} needs a value")
            key, value = arg[2:], args[i + 1]
            i += 2
        options[key.replace("-", "_")] = _parse_value(value)
    return options


def _task_and_knobs(name: str, args: list[str]):
    """The task built from the structural parameters among `args`, and the knobs among them."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    options = _parse_extra_options(args)
    knob_names = set(TASKS[name].knobs)
    param_names = _structural_params(name)
    unknown = sorted(set(options) - knob_names - set(param_names))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join('--' + k for k in unknown)} for task {name!r}; "
            f"knobs: {', '.join(sorted(knob_names)) or '-'}; parameters: {', '.join(param_names) or '-'}"
        )
    task = make_task(name, **{k: v for k, v in options.items() if k not in knob_names})
    knobs = {k: v for k, v in options.items() if k in knob_names}
    for knob, value in knobs.items():
        task.knobs[knob].resolve(knob, value)
    return task, knobs


def _structural_params(name: str) -> list[str]:
    signature = inspect.signature(TASKS[name].__init__)
    return [p for p in signature.parameters if p != "self"]


@app.command("list")
def list_tasks() -> None:
    """List every task: family, structural parameters, knobs with their train / eval ranges, chance."""
    table = Table(title="hxt tasks", show_lines=False)
    for column in ("name", "family", "parameters", "knobs: train | eval", "vocab", "chance"):
        table.add_column(column)
    for name in sorted(TASKS, key=lambda n: (TASKS[n].family, n)):
        task = make_task(name)
        params = ", ".join(f"{k}={v}" for k, v in task.params().items()) or "-"
        knobs = "\n".join(
            f"{knob} {_fmt_range(*task.train_range[knob])} | {_fmt_range(*task.eval_range[knob])}"
            for knob in task.knobs
        )
        table.add_row(name, task.family, params, knobs, str(task.vocab_size), f"{task.chance_accuracy:.4g}")
    Console(width=160).print(table)


@app.command("show", context_settings=_EXTRA_OPTIONS)
def show(
    ctx: typer.Context,
    name: str = _TASK_NAME,
    seed: int = typer.Option(0, help="Seed of the batch."),
    n: int = typer.Option(3, help="Number of examples to print."),
) -> None:
    """Print decoded examples with their answers.

    Extra options set difficulty knobs (``--length 12`` or a range ``--length 3,40``) and
    structural parameters (``--modulus 7``, ``--tagging true``).
    """
    if n < 1:
        raise ValueError(f"option --n must be >= 1, got {n}")
    task, knobs = _task_and_knobs(name, ctx.args)
    batch = task.sample(seed, n, **knobs)
    params = ", ".join(f"{k}={v}" for k, v in task.params().items())
    typer.echo(
        f"{name} ({task.family}{'; ' + params if params else ''}), vocab {task.vocab_size}, "
        f"chance {task.chance_accuracy:.4g}, seed {seed}"
    )
    for index in range(n):
        meta = ", ".join(f"{key}={int(values[index])}" for key, values in batch.meta.items())
        typer.echo(f"\n# example {index} ({meta})")
        typer.echo(task.decode(batch, index))


@app.command("export", context_settings=_EXTRA_OPTIONS)
def export(
    ctx: typer.Context,
    name: str = _TASK_NAME,
    n: int = typer.Option(..., "--n", help="Number of examples."),
    out: Path = typer.Option(..., help="File to write: .parquet, .jsonl or .csv."),
    seed: int = typer.Option(0, help="Seed; the same seed, n and knobs always give the same rows."),
) -> None:
    """Write a task's examples to a file, for training elsewhere on our generators.

    Each row holds one example: `inputs`, `targets` and `loss_mask` (lists, trimmed of padding;
    targets[t] is the answer after reading inputs[: t + 1], scored where loss_mask is true),
    `seq_len`, and the example's knob values and other meta as columns. Knobs and structural
    parameters are extra options as for `hxt tasks show` (``--length 3,40``, ``--modulus 7``);
    knobs left out keep the task's training range. Parquet files also carry the task, its
    parameters, the knobs, seed, vocabulary size, padding id and chance accuracy as metadata.
    """
    from sweeps.cli_export import FORMATS, task_examples, task_metadata, write_frame
    from sweeps.files import check_writable_dir

    if n < 1:
        raise ValueError(f"option --n must be >= 1, got {n}")
    if out.is_dir():
        raise ValueError(
            f"--out {str(out)!r} is a directory; name a file such as {str(out / (name + '.parquet'))!r}"
        )
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(
            f"--out {str(out)!r}: unknown file type; allowed: {', '.join('.' + f for f in FORMATS)}"
        )
    check_writable_dir(out.parent, "--out's directory")
    task, knobs = _task_and_knobs(name, ctx.args)
    frame = task_examples(task, seed, n, knobs)
    write_frame(frame, out, fmt, task_metadata(name, task, seed, knobs))
    typer.echo(f"{out}: {n} examples of {name} ({', '.join(c for c in frame.columns if c != 'example')})")
