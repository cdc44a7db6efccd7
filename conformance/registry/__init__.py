"""Baselines in the MLflow model registry: register, approve, resolve; and the pyfunc model.

MLflow itself is imported only when a registry is first used.
"""

from conformance.registry.mlflow_registry import (
    APPROVED_ALIAS,
    RegisteredBaseline,
    Registry,
    baseline_name,
    tracking_uri,
)

__all__ = ["APPROVED_ALIAS", "RegisteredBaseline", "Registry", "baseline_name", "tracking_uri"]
