"""The ``lightkeeper`` command: Typer app and the one place that turns errors into exit codes.

Exit codes: 0 done (a run that completed counts, even with failed connections), 1 an operation failed,
2 configuration or usage error. Expected failures print one sentence, never a traceback.
"""

from __future__ import annotations

import sys

import click
import typer
from sqlalchemy.exc import SQLAlchemyError

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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="lightkeeper", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        error("aborted")
        return 130
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except (ConfigError, SchemaOutOfDate) as exc:
        error(str(exc))
        return 2
    except LightkeeperError as exc:
        error(str(exc))
        return 1
    except SQLAlchemyError as exc:
        error(f"the database cannot be used: {_first_line(exc)} (check DATABASE_URL)")
        return 1
    return result if isinstance(result, int) else 0


def _first_line(exc: SQLAlchemyError) -> str:
    """The driver's own sentence, without SQLAlchemy's statement dump and links."""
    origin = getattr(exc, "orig", None) or exc
    return str(origin).strip().splitlines()[0][:300] if str(origin).strip() else type(origin).__name__


__all__ = ["app", "main", "run"]
