"""The ``conformance`` command line: a thin layer over :mod:`conformance.api`."""

from conformance.cli.main import main

__all__ = ["main"]
