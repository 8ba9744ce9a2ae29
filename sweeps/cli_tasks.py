"""`hxt tasks ...` (placeholder, filled by its owner)."""

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_tasks() -> None:
    """List every task."""
