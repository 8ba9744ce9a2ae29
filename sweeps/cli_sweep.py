"""`hxt train` and `hxt sweep ...` (placeholder, filled by its owner)."""

import typer


def register_commands(app: typer.Typer) -> None:
    sweep_app = typer.Typer(no_args_is_help=True)
    app.add_typer(sweep_app, name="sweep", help="Plan, run and inspect sweeps.")

    @sweep_app.command()
    def plan(file: str) -> None:
        """Print the grid of a sweep file."""
