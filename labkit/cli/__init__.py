"""The command line, the top layer: `labkit` and `python -m labkit` (`commands.main`), with flags generated from
the schema (`flags`). May import every other layer."""

from .commands import main

__all__ = ["main"]
