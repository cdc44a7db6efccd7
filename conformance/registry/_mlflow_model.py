"""Entry point MLflow loads for a conformance baseline model (models from code)."""

from mlflow.models import set_model

from conformance.registry.pyfunc import BaselineModel

set_model(BaselineModel())
