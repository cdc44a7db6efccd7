"""Measured figures of conformance: throughput, startup time, the ledger, and the validation study.

Each module runs from the repository root as ``python -m benchmarks.NAME --help``; data comes through
:mod:`benchmarks.data`, results go to the folder given with ``--out``. See benchmarks/README.md.
"""
