"""The ``tabserve`` console command."""

from tabserve.cli.main import main

__all__ = ["main"]
