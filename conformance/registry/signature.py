"""The pyfunc model's input and output columns, for the signature logged with each baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

OUTPUT_COLUMNS = ("record_id", "verdict", "p_value", "score", "alpha", "reason")


def example_input(model_version: str, input_class: str) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([{"record_id": "example-1", "model_version": model_version, "input_class": input_class,
                          "input": "example input", "output": "example output"}])


def example_output() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([{"record_id": "example-1", "verdict": "within_bounds", "p_value": 0.5,
                          "score": 0.3, "alpha": 0.05, "reason": "..."}])
