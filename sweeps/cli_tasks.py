"""`hxt tasks list` and `hxt tasks show`: the task library from the command line."""

from __future__ import annotations

import inspect

import typer
from rich.console import Console
from rich.table import Table

from synthetic_tasks import TASKS, make_task

app = typer.Typer(no_args_is_help=True)


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


@app.command(
    "show",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Task name (see `hxt tasks list`)."),
    seed: int = typer.Option(0, help="Seed of the batch."),
    n: int = typer.Option(3, help="Number of examples to print."),
) -> None:
    """Print decoded examples with their answers.

    Extra options set difficulty knobs (``--length 12`` or a range ``--length 3,40``) and
    structural parameters (``--modulus 7``, ``--tagging true``).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    if n < 1:
        raise ValueError(f"option --n must be >= 1, got {n}")
    options = _parse_extra_options(ctx.args)
    knob_names = set(TASKS[name].knobs)
    param_names = _structural_params(name)
    unknown = sorted(set(options) - knob_names - set(param_names))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join('--' + k for k in unknown)} for task {name!r}; "
            f"knobs: {', '.join(sorted(knob_names)) or '-'}; parameters: {', '.join(param_names) or '-'}"
        )
    task = make_task(name, **{k: v for k, v in options.items() if k not in knob_names})
    batch = task.sample(seed, n, **{k: v for k, v in options.items() if k in knob_names})
    params = ", ".join(f"{k}={v}" for k, v in task.params().items())
    typer.echo(
        f"{name} ({task.family}{'; ' + params if params else ''}), vocab {task.vocab_size}, "
        f"chance {task.chance_accuracy:.4g}, seed {seed}"
    )
    for index in range(n):
        meta = ", ".join(f"{key}={int(values[index])}" for key, values in batch.meta.items())
        typer.echo(f"\n# example {index} ({meta})")
        typer.echo(task.decode(batch, index))
