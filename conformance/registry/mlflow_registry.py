"""Baselines in the MLflow model registry: register, approve, resolve.

Each baseline is an MLflow pyfunc model (its ``predict`` scores a DataFrame of
records) registered under a name derived from (model_version, input_class),
with its lineage as tags. A person's approval sets the alias ``approved`` and
records who approved it and when; scoring resolves ``models:/<name>@approved``,
so what was approved is what is used.

The tracking store is ``MLFLOW_TRACKING_URI`` when set; otherwise an embedded
SQLite store at ``./conformance_store/mlflow.db`` with artifacts beside it. MLflow
records the artifacts' absolute path; a store moved with its project folder is read
where it is now (see ``load_version``) and builds into its new place (``_experiment_id``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from conformance.baseline.format import Baseline, load_baseline, save_baseline
from conformance.defaults import STORE_DIR, default_store_dir
from conformance.errors import BaselineError, BaselineVersionNotFoundError, RegistryError

if TYPE_CHECKING:
    from conformance.records import Record

APPROVED_ALIAS = "approved"
EXPERIMENT_NAME = "conformance-baselines"
_MODEL_CODE = Path(__file__).with_name("_mlflow_model.py")
# The one error code by which MLflow says a registered model (or version) is not there, from a
# local store and over REST alike. A missing alias is not reported this way (it comes back as
# INVALID_PARAMETER_VALUE), which is why aliases are read from the registered model instead.
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store in the working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    return "sqlite:///" + str(default_store_dir() / "mlflow.db")


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-") or "x"


def baseline_name(model_version: str, input_class: str) -> str:
    """The registered model name for a cell: ``conformance.<model_version>.<input_class>``.

    Characters outside ``[A-Za-z0-9._-]`` become ``-`` (a value with none left becomes ``x``). When that
    changes either value, the name ends in ``-`` and 8 hex digits of the SHA-256 of the exact pair, so that
    cells which differ only in such characters keep names of their own: ``a/b`` and ``a-b``, ``bot`` and
    ``bot ``, モデル and 模型. The exact values are also kept in tags and checked on use, so two cells can never
    share a name silently (``a.b``/``c`` and ``a``/``b.c`` still would: ``build`` refuses such a pair).
    """
    name = legacy_baseline_name(model_version, input_class)
    if _slug(model_version) == model_version and _slug(input_class) == input_class:
        return name
    digest = hashlib.sha256(f"{model_version}\0{input_class}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"{name}-{digest[:8]}"


def legacy_baseline_name(model_version: str, input_class: str) -> str:
    """The name a cell had before names kept a digest suffix (:func:`baseline_name`); a registered model of this
    name owned by the cell is still found (:meth:`Registry.name_of`)."""
    return f"conformance.{_slug(model_version)}.{_slug(input_class)}"


@dataclass(frozen=True)
class RegisteredBaseline:
    """A baseline version as it stands in the registry."""

    name: str
    version: int
    model_version: str
    input_class: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "uri": self.uri,
                "model_version": self.model_version, "input_class": self.input_class}


class Registry:
    """A thin layer over MLflow's public client for conformance baselines."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or tracking_uri()
        self.embedded = uri is None and not os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        self._cache: dict[tuple[str, int], Baseline] = {}
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            # MLflow logs a lot at INFO (database migrations, model logging);
            # the tool prints its own account of what it did.
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            import mlflow
            from mlflow import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)

            if self.uri.startswith("sqlite:///"):
                Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            # set_tracking_uri also exports MLFLOW_TRACKING_URI to the environment;
            # keep the environment as the user left it, so that "unset means the
            # embedded store" stays true for the rest of the process.
            before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_registry_uri(self.uri)
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            try:
                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
                self._client.search_experiments(max_results=1)
            except Exception as exc:
                self._client = None
                raise RegistryError(
                    f"cannot reach the MLflow tracking store at {self.uri}: {type(exc).__name__}: "
                    f"{_first_line(exc)}. Check that MLFLOW_TRACKING_URI is right (unset it to use the embedded "
                    "SQLite store) and that its server is running and reachable, then retry."
                ) from exc
        return self._client

    @contextlib.contextmanager
    def _failing_loudly(self, operation: str, name: str) -> Iterator[None]:
        """Turn a failure of the store (MLflow's errors, I/O and network errors) into a RegistryError.

        Anything else (a programming error, a :class:`ConformanceError`, such as the client's own
        "cannot reach") passes through as it is.
        """
        from mlflow.exceptions import MlflowException

        try:
            yield
        except (MlflowException, OSError) as exc:
            raise self._failure(operation, name, exc) from exc

    def _failure(self, operation: str, name: str, exc: BaseException) -> RegistryError:
        first = _first_line(exc)
        code = getattr(exc, "error_code", None)
        detail = first if code is None or first.startswith(code) else f"{code}: {first}"
        return RegistryError(
            f"the MLflow registry at {self.uri} failed to {operation} {name!r}: {type(exc).__name__}: {detail}. "
            "This is not a missing baseline: nothing was decided from it. Retry; if it fails again, check that "
            "the tracking server is running and reachable (MLFLOW_TRACKING_URI) and that your credentials may "
            "use this registry."
        )

    def _registered_model(self, name: str) -> Any | None:
        """The registered model ``name``, or ``None`` only when MLflow says it does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == _NOT_FOUND:
                return None
            raise self._failure("read the registered model", name, exc) from exc
        except OSError as exc:
            raise self._failure("read the registered model", name, exc) from exc

    def _experiment_id(self) -> str:
        with self._failing_loudly("find or create the experiment", EXPERIMENT_NAME):
            experiment = self.client.get_experiment_by_name(EXPERIMENT_NAME)
            location = (default_store_dir() / "artifacts") if self.embedded else None
            if experiment is not None and location is not None and _elsewhere(experiment.artifact_location, location):
                # A moved or copied store: its experiment would put new baselines in the old place. MLflow cannot
                # change an experiment's artifact location, so the old experiment keeps its runs under another
                # name and a new one stores here.
                self.client.rename_experiment(experiment.experiment_id,
                                              f"{EXPERIMENT_NAME}-moved-{experiment.experiment_id}")
                experiment = None
            if experiment is not None:
                return str(experiment.experiment_id)
            return str(self.client.create_experiment(
                EXPERIMENT_NAME, artifact_location=None if location is None else location.as_uri()))

    # -- register -----------------------------------------------------------
    def register(self, baseline: Baseline, approved: Sequence[Record] | None = None) -> RegisteredBaseline:
        """Log the baseline as a pyfunc model in a run and register a new version.

        The build run also records the lineage (:func:`conformance.registry.lineage.log_build_lineage`): the
        ``approved`` records of the cell, when given, as an ``mlflow.data`` dataset input, the evaluation runs,
        and the calibration scores as a plot; the model gets an ``input_example``.

        The model is logged from code (``_mlflow_model.py``; nothing is pickled) and
        carries the code it loads, so that it does not depend on what the loading
        machine has installed under the name ``conformance`` (on PyPI that name is
        another project):

        * ``code_paths`` holds a copy of the running ``conformance`` package. MLflow
          stores it as ``code/conformance`` and puts ``code/`` first on ``sys.path`` at
          load ("Saving Extra Code with an MLflow Model", MLflow's *Managing
          Dependencies in MLflow Models*), so ``mlflow.pyfunc.load_model`` works in an
          environment that has the third-party packages but not this project.
        * ``requirements.txt`` pins ``conformance-audit==<version>`` and names a wheel
          of that same code carried at ``code/conformance_audit-<version>-py3-none-any.whl``,
          the pattern the same page gives for a library that is not on PyPI
          (``code_paths=["custom_package.whl"]`` with the requirement
          ``"code/custom_package.whl"``; MLflow runs ``pip install -r`` in the model's
          folder, so the path resolves there). An environment MLflow builds for the
          model (``mlflow models serve``, ``spark_udf`` with a virtualenv) installs
          the pinned version from that file and never asks an index for it: the pin
          alone would fail while ``conformance-audit`` is unpublished, and after it is
          published would still take the code from the model, the code the baseline
          was built with. The third-party packages the code needs at load are pinned
          to the versions it was built with.
        """
        import mlflow
        from mlflow.models import infer_signature

        from conformance._version import __version__
        from conformance.registry._carry import (
            DISTRIBUTION,
            build_wheel,
            copy_package,
            runtime_requirements,
        )
        from conformance.registry.signature import example_input, example_output

        name = self.name_of(baseline.model_version, baseline.input_class)
        self._check_name_owner(name, baseline.model_version, baseline.input_class)
        tags = baseline_tags(baseline)
        example = example_input(baseline.model_version, baseline.input_class)
        signature = infer_signature(example, example_output())
        experiment_id = self._experiment_id()
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folder = save_baseline(baseline, Path(tmp) / "baseline")
            package = copy_package(Path(tmp) / "code")
            from conformance.embedder import backend_of

            third_party = runtime_requirements(backend_of(baseline.embedder))
            wheel = build_wheel(package, Path(tmp), version=__version__, requires=third_party)
            # The wheel before the pin: pip adds root requirements one at a time, and a pin it meets
            # before the file that satisfies it is looked up in the index alone, and fails there.
            requirements = [f"code/{wheel.name}", f"{DISTRIBUTION}=={__version__}", *third_party]
            with self._failing_loudly("register a new version of", name):
                # Against a tracking server MLflow writes "View run ..." to stdout when a run ends; stdout is
                # the command line's machine-readable output (--format json), so its words go to stderr.
                with contextlib.redirect_stdout(sys.stderr), \
                        mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
                    mlflow.set_tags(tags)
                    mlflow.log_params({"alpha": baseline.alpha, "k": baseline.spec.k, "scorer": baseline.spec.name})
                    mlflow.log_metrics({"n_fit": baseline.n_fit, "n_calibration": baseline.n_calibration,
                                        "n_calibration_prompts": baseline.n_calibration_prompts})
                    from conformance.registry.lineage import log_build_lineage

                    log_build_lineage(baseline, approved, name=name)
                    info = mlflow.pyfunc.log_model(
                        name="baseline",
                        python_model=str(_MODEL_CODE),
                        artifacts={"baseline": str(folder)},
                        signature=signature,
                        input_example=example,
                        code_paths=[str(package), str(wheel)],
                        pip_requirements=requirements,
                    )
                    run_id = run.info.run_id
                # register_model prints "Successfully registered ..." itself; we report instead.
                with contextlib.redirect_stderr(io.StringIO()):
                    version = mlflow.register_model(info.model_uri, name, tags=tags)
                self.client.update_registered_model(
                    name, description=f"conformance baseline for model_version={baseline.model_version!r}, "
                                      f"input_class={baseline.input_class!r}")
                self.client.set_registered_model_tag(name, "conformance.model_version", baseline.model_version)
                self.client.set_registered_model_tag(name, "conformance.input_class", baseline.input_class)
                self.client.update_model_version(
                    name, version.version,
                    description=(f"{baseline.n_fit} reference and {baseline.n_calibration} calibration approved "
                                 f"outputs ({baseline.n_calibration_prompts} calibration prompts) at "
                                 f"alpha={baseline.alpha}; built in run {run_id}; digest {baseline.digest}"),
                )
        return RegisteredBaseline(name, int(version.version), baseline.model_version, baseline.input_class,
                                  tags | {"run_id": run_id})

    def name_of(self, model_version: str, input_class: str) -> str:
        """The registered model name of a cell in this registry: :func:`baseline_name`, or the cell's
        :func:`legacy_baseline_name` when a model of that name is registered, owned by this very cell, and none of
        the new name is (a cell registered before names kept a digest suffix keeps its name and its versions)."""
        name = baseline_name(model_version, input_class)
        legacy = legacy_baseline_name(model_version, input_class)
        if legacy == name or self._registered_model(name) is not None:
            return name
        old = self._registered_model(legacy)
        if old is not None and _owner(old) == (model_version, input_class):
            return legacy
        return name

    def _check_name_owner(self, name: str, model_version: str, input_class: str) -> None:
        model = self._registered_model(name)
        if model is None:
            return  # not registered yet
        owner = (model.tags.get("conformance.model_version"), model.tags.get("conformance.input_class"))
        if owner != (None, None) and owner != (model_version, input_class):
            raise RegistryError(
                f"registered model {name!r} belongs to (model_version {owner[0]!r}, input_class {owner[1]!r}), not "
                f"(model_version {model_version!r}, input_class {input_class!r}): the two cells map to one name; "
                "rename one of them"
            )

    # -- approve ------------------------------------------------------------
    def approve(
        self, model_version: str, input_class: str, *, by: str, version: int | None = None
    ) -> RegisteredBaseline:
        """Set the ``approved`` alias on a version (default: the newest) and record who and when.

        The registry's part alone: ``score`` uses a version only when the ledger holds its approval, which
        :func:`conformance.api.approve` records (with the history tags; :mod:`conformance.approvals`).
        """
        if not by or not by.strip():
            raise RegistryError("an approval needs the approver's name: pass --by NAME")
        name = self.name_of(model_version, input_class)
        versions = self._versions(name, model_version, input_class)
        if version is None:
            version = max(versions)
        elif version not in versions:
            raise RegistryError(
                f"{name} has no version {version} (it has {', '.join(map(str, sorted(versions)))}); "
                "pass one of those to --version"
            )
        previous = self.approved_version(model_version, input_class)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._failing_loudly(f"approve version {version} of", name):
            self.client.set_model_version_tag(name, str(version), "approved_by", by.strip())
            self.client.set_model_version_tag(name, str(version), "approved_at", now)
            if previous is not None and previous != version:
                self.client.set_model_version_tag(name, str(version), "supersedes_version", str(previous))
            self.client.set_registered_model_alias(name, APPROVED_ALIAS, str(version))
            tags = dict(self.client.get_model_version(name, str(version)).tags)
        return RegisteredBaseline(name, int(version), model_version, input_class, tags)

    def _versions(self, name: str, model_version: str, input_class: str) -> list[int]:
        with self._failing_loudly("list the versions of", name):
            found = self.client.search_model_versions(f"name='{name}'")
        if not found:
            raise RegistryError(
                f"no baseline is registered for model_version={model_version!r}, input_class={input_class!r} "
                f"(looked for {name!r} in {self.uri}); build one with `conformance build`"
            )
        return [int(v.version) for v in found]

    def approved_version(self, model_version: str, input_class: str) -> int | None:
        """The approved version of a cell's baseline; ``None`` when none is registered or approved.

        Raises :class:`RegistryError` when the store cannot be read.
        """
        model = self._registered_model(self.name_of(model_version, input_class))
        return None if model is None else _approved(model)

    # -- resolve ------------------------------------------------------------
    def resolve_approved(self, model_version: str, input_class: str) -> tuple[RegisteredBaseline, Baseline] | str:
        """The approved baseline of a cell, or a plain-words reason why there is none.

        A reason (which becomes a ``no_baseline`` verdict) is given only for what the registry
        says: no such registered model, one owned by another cell, or no approved version.
        Anything else that goes wrong reading the store raises :class:`RegistryError`; against a
        stopped tracking server that happens once MLflow's client has given up retrying (see the
        module docstring).
        """
        name = self.name_of(model_version, input_class)
        model = self._registered_model(name)
        if model is None:
            return (f"no baseline is registered for model_version {model_version!r} and input_class "
                    f"{input_class!r}; build and approve one before scoring these outputs")
        owner = (model.tags.get("conformance.model_version"), model.tags.get("conformance.input_class"))
        if owner != (model_version, input_class):
            return (f"registered model {name!r} belongs to (model_version {owner[0]!r}, input_class {owner[1]!r}), "
                    f"not to (model_version {model_version!r}, input_class {input_class!r})")
        version = _approved(model)
        if version is None:
            return (f"baseline {name!r} exists but no version of it is approved; a person must run "
                    f"`conformance approve --model-version {model_version} --input-class {input_class} --by NAME`")
        return self.load_version(name, version)

    def _store_dir(self) -> Path | None:
        """The folder of a SQLite store (``.../conformance_store``); ``None`` for a server."""
        if not self.uri.startswith("sqlite:///"):
            return None
        return Path(self.uri[len("sqlite:///"):]).parent

    def _local_location(self, source: str) -> Path | None:
        """Where a version's files are recorded when that is a local folder (a SQLite store), else ``None``."""
        if self._store_dir() is None:
            return None
        if source.startswith("models:/"):  # MLflow 3: the version's source is a logged model
            source = str(self.client.get_logged_model(source[len("models:/"):]).artifact_location)
        if source.startswith("file://"):
            return Path(url2pathname(urlparse(source).path))
        return Path(source) if source.startswith("/") else None

    def load_version(self, name: str, version: int) -> tuple[RegisteredBaseline, Baseline]:
        """Download and load one registered baseline version (cached per process).

        In a SQLite store whose recorded artifact folder is gone because the store was moved, the version's
        files are read under the store's current folder instead (:func:`_rerooted`); the digest checks apply.
        """
        import mlflow

        from mlflow.exceptions import MlflowException

        try:
            found_version = self.client.get_model_version(name, str(version))
            tags = dict(found_version.tags)
        except MlflowException as exc:
            if exc.error_code == _NOT_FOUND:
                raise BaselineVersionNotFoundError(
                    f"models:/{name}/{version} does not exist in the registry at {self.uri}") from exc
            raise self._failure(f"read version {version} of", name, exc) from exc
        except OSError as exc:
            raise self._failure(f"read version {version} of", name, exc) from exc
        key = (name, int(version))
        if key not in self._cache:
            with self._failing_loudly(f"find the artifacts of version {version} of", name):
                location = self._local_location(str(found_version.source))
            with tempfile.TemporaryDirectory() as tmp:
                moved = _rerooted(location, self._store_dir()) if location is not None else None
                if moved is not None:  # the store was moved: its files are read where they are now
                    local = str(moved)
                else:
                    with self._failing_loudly(f"download the artifacts of version {version} of", name):
                        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                                    dst_path=tmp)
                found = sorted(Path(local).rglob("baseline.json"))
                if not found and location is not None and not location.exists():
                    raise BaselineError(
                        f"the files of models:/{name}/{version} were stored in {location}, which does not exist, "
                        f"and this store's folder holds no copy of them: was the store's artifacts folder deleted, "
                        f"or this mlflow.db copied without it? Run from the folder that holds the whole "
                        f"{STORE_DIR} folder (mlflow.db and artifacts/ together)")
                if not found:
                    raise BaselineError(
                        f"models:/{name}/{version} holds no baseline.json; it was not built by conformance"
                    )
                baseline = load_baseline(found[0].parent)
            if tags.get("digest") and tags["digest"] != baseline.digest:
                raise BaselineError(
                    f"models:/{name}/{version}: the stored baseline's digest {baseline.digest} differs from the "
                    f"digest recorded at registration ({tags['digest']}); the artifact was altered"
                )
            self._cache[key] = baseline
        baseline = self._cache[key]
        return RegisteredBaseline(name, int(version), baseline.model_version, baseline.input_class, tags), baseline


def _rerooted(location: Path, store: Path | None) -> Path | None:
    """``location`` moved under ``store``, when it was recorded under a ``conformance_store`` that is not there.

    The embedded store records absolute artifact locations (MLflow resolves a relative one at creation), so a
    project folder moved or copied elsewhere would point at the old place. The part after the recorded path's
    last ``conformance_store`` is looked up under the current store instead; what is loaded from there is
    checked against the digest registered with the version, as every load is.
    """
    if store is None or location.exists() or STORE_DIR not in location.parts:
        return None
    parts = location.parts
    last = len(parts) - 1 - parts[::-1].index(STORE_DIR)
    candidate = store.joinpath(*parts[last + 1:])
    return candidate if candidate.is_dir() else None


def _elsewhere(recorded: str, here: Path) -> bool:
    """Whether an experiment's recorded artifact location is another ``conformance_store``'s than ``here``."""
    if not recorded.startswith("file://"):
        return False
    path = Path(url2pathname(urlparse(recorded).path))
    return STORE_DIR in path.parts and os.path.realpath(path) != os.path.realpath(here)


def _first_line(exc: BaseException) -> str:
    """The first line of an error: a database error goes on with its SQL; the whole error stays chained."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _owner(model: Any) -> tuple[str | None, str | None]:
    """The cell a registered model's tags say it belongs to."""
    return model.tags.get("conformance.model_version"), model.tags.get("conformance.input_class")


def _approved(model: Any) -> int | None:
    """The version the ``approved`` alias of a registered model points to, if any."""
    version = model.aliases.get(APPROVED_ALIAS)
    return None if version is None else int(version)


def baseline_tags(baseline: Baseline) -> dict[str, str]:
    """Registry tags: the lineage a reviewer needs, as strings."""
    lineage = baseline.lineage
    return {
        "conformance.model_version": baseline.model_version,
        "conformance.input_class": baseline.input_class,
        "digest": baseline.digest,
        "alpha": str(baseline.alpha),
        "n_fit": str(baseline.n_fit),
        "n_calibration": str(baseline.n_calibration),
        "n_calibration_prompts": str(baseline.n_calibration_prompts),
        "calibration_method": baseline.spec.p_value_rule,
        "scorer": baseline.spec.name,
        "embedder": str(baseline.embedder.get("model")),
        "embedder_weights_sha256": str(baseline.embedder.get("weights_sha256")),
        "eval_run_ids": ",".join(lineage.get("eval_run_ids", [])),
        "dataset_digest": str(lineage.get("dataset_digest", "")),
        "training_data_version": ",".join(lineage.get("training_data_versions", [])),
        "policy_id": ",".join(lineage.get("policy_ids", [])),
        "policy_version": ",".join(lineage.get("policy_versions", [])),
        "source_file": str(lineage.get("source_file", "")),
    } | {key: str(lineage[key]) for key in ("built_by", "build_id") if lineage.get(key)}
