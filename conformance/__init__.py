"""conformance: was this model output within the bounds of what was approved?

Build baselines from approved evaluation outputs, register and approve them in
MLflow, score audited outputs against them with split-conformal p-values, and
record a verdict per output; reviewers sign verdicts off in the ledger. Records
and baselines can stay in memory:

>>> import conformance
>>> sorted(conformance.__all__)[:4]
['Baseline', 'BuiltBaseline', 'ConformanceError', 'GroupSummary']

The public names are imported on first use, so that ``import conformance`` and
``conformance --help`` load neither SciPy, torch nor MLflow.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from conformance._version import __version__

# MLflow reports usage to its maintainers unless told not to. Evidence tooling makes no network calls of its
# own accord, so it is off unless the user set the variable (MLFLOW_DISABLE_TELEMETRY=false turns it on). Set
# here, before any conformance module imports MLflow; MLflow reads it once, when it is first imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

if TYPE_CHECKING:
    from conformance.api import BuiltBaseline, ScoreResult, approve, build, score, signoff, signoffs_of
    from conformance.baseline.format import Baseline, load_baseline
    from conformance.errors import ConformanceError
    from conformance.records import read_records
    from conformance.verdict import GroupSummary, Verdict

_WHERE = {
    "approve": "conformance.api",
    "build": "conformance.api",
    "score": "conformance.api",
    "signoff": "conformance.api",
    "signoffs_of": "conformance.api",
    "BuiltBaseline": "conformance.api",
    "ScoreResult": "conformance.api",
    "Baseline": "conformance.baseline.format",
    "load_baseline": "conformance.baseline.format",
    "ConformanceError": "conformance.errors",
    "read_records": "conformance.records",
    "GroupSummary": "conformance.verdict",
    "Verdict": "conformance.verdict",
}

__all__ = [
    "Baseline",
    "BuiltBaseline",
    "ConformanceError",
    "GroupSummary",
    "ScoreResult",
    "Verdict",
    "__version__",
    "approve",
    "build",
    "load_baseline",
    "read_records",
    "score",
    "signoff",
    "signoffs_of",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'conformance' has no attribute {name!r}")
