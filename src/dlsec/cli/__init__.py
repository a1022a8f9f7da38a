"""The ``dlsec`` command: one subcommand per pillar; exit codes come from exception classes.

0 ok, 1 findings, 2 error (bad input: one line on stderr, never a traceback), 3 nothing scanned.
Set ``DLSEC_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from dlsec import __version__
from dlsec.errors import DlsecError

COMMANDS = {
    "evaluate": "dlsec.cli.evaluate:evaluate",
    "attack": "dlsec.cli.attack:attack",
    "attacks": "dlsec.cli.attack:attacks",
    "checks": "dlsec.cli.evaluate:checks",
    "scan": "dlsec.cli.scan:scan",
    "train": "dlsec.cli.train:train",
    "he": "dlsec.cli.he:he",
    "protect": "dlsec.cli.protect:protect",
    "audit": "dlsec.cli.audit:audit",
    "lint": "dlsec.cli.lint:lint",
    "sandbox": "dlsec.cli.sandbox:sandbox",
}
"""Subcommands, imported only when used: ``dlsec scan`` must not pay for importing torch."""


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[name].partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlsec")
def cli() -> None:
    """dlsec: security toolkit for deep-learning models."""


def _error(message: str) -> None:
    """One unwrapped line on stderr (rich would wrap it at the terminal width)."""
    click.echo(" ".join(message.split()), err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn errors into one line and an exit status."""
    try:
        rv = cli.main(args=argv, prog_name="dlsec", standalone_mode=False)
    except DlsecError as exc:
        _error(f"dlsec: error: {exc}")
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _error("dlsec: aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("DLSEC_DEBUG"):
            raise
        first = str(exc).strip().splitlines()
        _error(f"dlsec: error: {type(exc).__name__}: {first[0] if first else ''} (set DLSEC_DEBUG=1 for details)")
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
