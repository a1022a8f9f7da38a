"""The terminal consoles (rich), kept free of heavy imports so every subcommand starts fast."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
