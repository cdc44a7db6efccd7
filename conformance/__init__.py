"""conformance: was this model output within the bounds of what was approved?

Build baselines from approved evaluation runs, register and approve them in
MLflow, score audited outputs against them with split-conformal p-values, and
record a verdict per output.

The public names are imported on first use, so that ``conformance --help`` and
the ledger verbs do not pay for SciPy and MLflow.

>>> import conformance
>>> sorted(conformance.__all__)[:3]
['Baseline', 'ConformanceError', 'Verdict']
>>> conformance.build.__module__
'conformance.api'
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from conformance._version import __version__

if TYPE_CHECKING:
    from conformance.api import approve, build, score
    from conformance.baseline import Baseline, load_baseline
    from conformance.errors import ConformanceError
    from conformance.records import read_records
    from conformance.verdict import Verdict

_WHERE = {
    "approve": "conformance.api",
    "build": "conformance.api",
    "score": "conformance.api",
    "Baseline": "conformance.baseline",
    "load_baseline": "conformance.baseline",
    "ConformanceError": "conformance.errors",
    "read_records": "conformance.records",
    "Verdict": "conformance.verdict",
}

__all__ = [
    "Baseline",
    "ConformanceError",
    "Verdict",
    "__version__",
    "approve",
    "build",
    "load_baseline",
    "read_records",
    "score",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'conformance' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The package's module type. Importing a submodule sets the package attribute of its name, so once
    anything had run ``from conformance.build import ...``, ``conformance.build`` was that module and
    ``conformance.build(...)`` failed with "'module' object is not callable". A public name is never
    replaced by a submodule (the submodule stays importable by its full name, through ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
