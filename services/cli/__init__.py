"""The ``renderfarm`` command line (typer + rich), a client of the REST API."""

from renderfarm.cli.main import app

__all__ = ["app"]
