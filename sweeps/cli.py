"""The `hxt` command line: the one place that touches every layer.

User errors (bad config, unknown task, impossible difficulty) surface as ValueError; `main` prints
them as one line and exits with code 2, without a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from sweeps.cli_export import export
from sweeps.cli_sweep import register_commands as register_sweep_commands
from sweeps.cli_tasks import app as tasks_app

app = typer.Typer(
    name="hxt",
    help="hxt, the hybrid expressivity testbed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(tasks_app, name="tasks", help="List and inspect the task library.")
register_sweep_commands(app)
app.command("export")(export)


@app.command()
def report(
    sweep_dir: Path = typer.Argument(..., help="A sweep directory holding the store (hxt.sqlite)."),
    out: Path = typer.Option(None, help="Where to write the report (default: SWEEP_DIR/report)."),
) -> None:
    """Write report.md, report.html and the figures for a sweep, from its store alone."""
    from analysis.report import write_report

    paths = write_report(sweep_dir, out)
    for path in paths:
        typer.echo(str(path))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: returns on success, otherwise leaves through `sys.exit` with the code.

    1 a run or a sweep's runs failed; 2 a user error (one line, no traceback); 130 / 143
    stopped by SIGINT / SIGTERM.
    """
    try:
        # Without standalone mode, click hands back a command's `typer.Exit` code instead of exiting.
        code = app(args=argv, prog_name="hxt", standalone_mode=False)
    except typer.Exit as exit_:
        code = exit_.exit_code
    except (typer.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as error:  # usage errors: unknown command, bad option
        error.show()
        sys.exit(2)
    except ValueError as error:
        typer.echo(f"error: {_one_line(error)}", err=True)
        sys.exit(2)
    except OSError as error:  # a path the user named cannot be written or read
        where = f" {error.filename!r}" if error.filename else ""
        typer.echo(f"error:{where} {error.strerror or _one_line(error)}", err=True)
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split("\n"))


if __name__ == "__main__":
    main()
