"""Baselines: what "approved" looked like for one (model_version, input_class).

``format`` is the stored format (JSON and ``.npz``, no pickle, a content digest,
versioned with migrations); ``fit`` builds a baseline from approved records.
"""

from conformance.baseline.format import FORMAT_VERSION, Baseline, load_baseline, save_baseline

__all__ = ["FORMAT_VERSION", "Baseline", "load_baseline", "save_baseline"]
