"""conformance: was this model output within the bounds of what was approved?

Build baselines from approved evaluation runs, register and approve them in
MLflow, score audited outputs against them with split-conformal p-values, and
record a verdict per output.

>>> import conformance
>>> sorted(conformance.__all__)[:3]
['Baseline', 'ConformanceError', 'Verdict']
"""

from conformance._version import __version__
from conformance.api import approve, build, score
from conformance.baseline import Baseline, load_baseline
from conformance.errors import ConformanceError
from conformance.records import read_records
from conformance.verdict import Verdict

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
