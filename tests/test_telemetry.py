"""MLflow's usage telemetry is off by default in a process that runs conformance, and a user can turn it on.

MLflow decides once, when it is imported, from MLFLOW_DISABLE_TELEMETRY, DO_NOT_TRACK, and the presence of
CI or test markers (PYTEST_CURRENT_TEST among them). Each check runs in a fresh interpreter whose environment
holds none of those markers, so that only conformance's default can disable it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Variables by which MLflow (mlflow.telemetry.utils) takes a process for CI or a test run, or was told already.
MARKERS = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI",
           "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN",
           "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME",
           "RUNBOT_WORKER_ID", "_MLFLOW_TESTING_TELEMETRY")


def run(code: str, cwd: Path, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in MARKERS and k != "MLFLOW_TRACKING_URI"}
    clean |= env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


ENVIRONMENT = "import json, os, conformance; print(json.dumps({'value': os.environ.get('MLFLOW_DISABLE_TELEMETRY')}))"


def test_importing_conformance_turns_telemetry_off_by_default(tmp_path: Path) -> None:
    assert run(ENVIRONMENT, tmp_path) == {"value": "true"}


def test_a_users_own_setting_stands(tmp_path: Path) -> None:
    assert run(ENVIRONMENT, tmp_path, MLFLOW_DISABLE_TELEMETRY="false") == {"value": "false"}


# A conformance command that opens the registry (MLflow imported by conformance), then what MLflow decided.
COMMAND = """
import contextlib, io, json, os, sys
from conformance.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(["approve", "--model-version", "bot-1", "--input-class", "refunds", "--by", "Tester"])
import mlflow.telemetry
from mlflow.telemetry.utils import is_telemetry_disabled
value = os.environ.get("MLFLOW_DISABLE_TELEMETRY")
print(json.dumps({"code": code, "imported": "mlflow" in sys.modules, "value": value,
                  "disabled": is_telemetry_disabled(), "client": mlflow.telemetry.get_telemetry_client() is not None}))
"""


@pytest.mark.slow  # MLflow in a subprocess, creating its SQLite store
def test_a_command_that_uses_mlflow_runs_without_telemetry(tmp_path: Path) -> None:
    found = run(COMMAND, tmp_path)
    # exit 2: nothing is registered in the new, empty store; what matters is that MLflow was imported
    assert found == {"code": 2, "imported": True, "value": "true", "disabled": True, "client": False}
    assert (tmp_path / "conformance_store" / "mlflow.db").exists()


@pytest.mark.slow
def test_do_not_track_is_honoured_whatever_conformance_defaults(tmp_path: Path) -> None:
    found = run(COMMAND, tmp_path, MLFLOW_DISABLE_TELEMETRY="false", DO_NOT_TRACK="true")
    assert found == {"code": 2, "imported": True, "value": "false", "disabled": True, "client": False}
