"""The ``lightkeeper`` command: Typer app and the one place that turns errors into exit codes.

Exit codes: 0 done (a run that completed counts, even with failed connections), 1 an operation failed,
2 configuration or usage error. Expected failures print one sentence, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import ConfigError, LightkeeperError, SchemaOutOfDate
from . import commands
from .output import error

app = typer.Typer(
    name="lightkeeper",
    help="Keeps Lightspeed Retail OAuth connections alive.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
commands.register(app)


def _print_version(value: bool) -> None:
    if value:
        from ..version import __version__

        print(f"lightkeeper {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the installed version and exit."),
    ] = False,
) -> None:
    """Keeps Lightspeed Retail OAuth connections alive."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code. Click's standalone mode handles usage errors (exit 2)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="lightkeeper", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (ConfigError, SchemaOutOfDate) as exc:
        error(str(exc))
        return 2
    except LightkeeperError as exc:
        error(str(exc))
        return 1
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError  # loaded by now if it could have raised

        if not isinstance(exc, SQLAlchemyError):
            raise
        error(f"the database cannot be used: {_first_line(exc)} (check DATABASE_URL)")
        return 1
    return 0


def _first_line(exc: Exception) -> str:
    """The driver's own sentence, without SQLAlchemy's statement dump and links."""
    origin = getattr(exc, "orig", None) or exc
    return str(origin).strip().splitlines()[0][:300] if str(origin).strip() else type(origin).__name__


__all__ = ["app", "main", "run"]
