"""The baseline: what "approved" looked like for one (model_version, input_class).

A baseline holds the reference (fit) bank of approved output embeddings, the
sorted calibration scores of a disjoint set of approved outputs, descriptor
statistics, alpha, the embedder fingerprint and the lineage. It is stored
without pickle — numeric arrays in an ``.npz`` read with ``allow_pickle=False``
and everything else in JSON — under a format version, with a content digest
that covers both.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from conformance.baseline.spec import ScorerSpec, explicit_scorer
from conformance.errors import BaselineError, EmbedderMismatchError
from conformance.files import atomic_write_bytes
from conformance.stats.style import WIDTH as STYLE_WIDTH

#: The stored format's history (each change bumps it and adds a migration to :data:`MIGRATIONS`):
#: 1, the kNN bank and calibration scores; 2 added ``scorer_state`` (the arrays of a fitted combined
#: scorer, stored as ``scorer__<name>`` in the npz) and optional per-record calibration fields;
#: 3 stores every field of the scorer specification explicitly (:mod:`conformance.baseline.spec`);
#: 4 adds the scorer's ``batch_test`` and, for the conditional batch test, the ``batch_reference_*`` fields;
#: 5 adds the reference outputs' style counts (``batch_reference_style_*``, a sparse matrix's CSR arrays);
#: 6 lets the combined score's components include descriptors measured against the input
#: (:data:`conformance.stats.descriptors.INPUT_RELATIVE`), which a release before it could not compute;
#: 7 stores which statistics the conditional batch test combines, and how (``batch_statistics``,
#: ``batch_combination``); 8 adds the shape tokens to the reference's style counts (a third block of columns,
#: :data:`conformance.stats.style.BLOCKS`) and lets the test combine ``shape_mmd``.
FORMAT_VERSION = 8
READABLE_FORMATS = (1, 2, 3, 4, 5, 6, 7, 8)
#: The conditional batch test's statistics before format 8 (0.6.0-0.9.0): a baseline built then keeps these.
_STATISTICS_BEFORE_8 = ("residual_mmd", "descriptor_mmd", "joint_mmd", "style_mmd")
META_FILE = "baseline.json"
ARRAYS_FILE = "arrays.npz"
_ARRAYS = ("reference", "reference_owner", "calibration_scores", "calibration_embeddings")
#: Arrays a format 2 baseline may carry beyond ``_ARRAYS`` and the scorer state.
_OPTIONAL_ARRAYS = ("calibration_residuals", "batch_reference_inputs", "batch_reference_outputs",
                    "batch_reference_descriptors", "batch_reference_style_values", "batch_reference_style_columns",
                    "batch_reference_style_rows")
_STATE_PREFIX = "scorer__"


@dataclass(frozen=True, eq=False)
class Baseline:
    """An approved reference distribution for one (model_version, input_class).

    Attributes
    ----------
    reference : ndarray (n_chunks, dim)
        Unit-norm chunk embeddings of the fit part's approved outputs.
    reference_owner : ndarray (n_chunks,)
        Index into ``reference_records`` of each reference chunk.
    calibration_scores : ndarray (n_calibration,)
        Nonconformity scores of the calibration part, sorted ascending (with
        ``scorer["calibration_method"] == "prompt_sample"``: only those of
        ``calibration_used``, one output per calibration prompt).
    calibration_embeddings : ndarray (n_calibration, dim)
        One pooled embedding per calibration output (for batch tests).
    reference_records : list of dict
        ``record_id``, ``input`` and ``output`` of each fit-part record, shown
        to reviewers as the nearest approved outputs.
    """

    model_version: str
    input_class: str
    alpha: float
    scorer: dict[str, Any]
    reference: np.ndarray
    reference_owner: np.ndarray
    calibration_scores: np.ndarray
    calibration_embeddings: np.ndarray
    reference_records: list[dict[str, str]]
    calibration_record_ids: list[str]
    descriptors: dict[str, Any]
    embedder: dict[str, Any]
    lineage: dict[str, Any]
    format_version: int = FORMAT_VERSION
    digest: str = field(default="")
    #: Arrays of the fitted scorer beyond the kNN bank (format 2; empty for ``knn_cosine``).
    scorer_state: dict[str, np.ndarray] = field(default_factory=dict)
    #: Per calibration record, in the order of ``calibration_record_ids``: its prompt key
    #: and its score (format 2, optional). The batch tests use them to permute whole prompts,
    #: since outputs for one prompt are not independent of each other.
    calibration_prompt_keys: list[str] | None = None
    calibration_scores_by_record: list[float] | None = None
    #: Per calibration record, its score under the batch tests' rule (baselines whose per-output score
    #: has facets; see :data:`conformance.stats.combined.BATCH_COMBINATION`); the batch rank tests use these.
    batch_calibration_scores_by_record: list[float] | None = None
    #: Indices into ``calibration_record_ids`` of one output per distinct calibration
    #: prompt (optional; see :class:`conformance.baseline.fit.CellPlan`).
    calibration_used: list[int] | None = None
    #: Per calibration record, in the order of ``calibration_record_ids``: what its pooled output
    #: embedding holds beyond what its input predicts (the combined scorer's ridge residual; baselines
    #: built since the batch MMD and energy tests run on them). ``None`` for older baselines, whose batch
    #: tests compare the pooled output embeddings themselves.
    calibration_residuals: np.ndarray | None = None
    #: The reference of the conditional batch test (scorer ``batch_test`` ``conditional``): every approved output
    #: of the cell (fit and calibration parts, up to a bound of whole prompts), its prompt key, the pooled
    #: embeddings of its input and output, and its descriptors (:data:`conformance.stats.descriptors.DESCRIPTORS`).
    #: ``None`` for baselines built before, whose batch tests compare with the calibration part only.
    batch_reference_prompt_keys: list[str] | None = None
    batch_reference_inputs: np.ndarray | None = None
    batch_reference_outputs: np.ndarray | None = None
    batch_reference_descriptors: np.ndarray | None = None
    #: The reference outputs' style counts (:func:`conformance.stats.style.style_counts`) as the ``data``,
    #: ``indices`` and ``indptr`` arrays of a CSR matrix (:attr:`batch_reference_style`). ``None`` for baselines
    #: built before (format 4 and older), whose conditional batch test has no style statistic.
    batch_reference_style_values: np.ndarray | None = None
    batch_reference_style_columns: np.ndarray | None = None
    batch_reference_style_rows: np.ndarray | None = None
    #: The format the baseline was stored in, when it was older than :data:`FORMAT_VERSION` and migrated on
    #: load (``None`` otherwise). Its ``digest`` stays the stored one: the approved artifact's identity.
    migrated_from: int | None = None

    def __post_init__(self) -> None:
        _ = self.spec  # a scorer lacking a field of the current format is refused here, not while scoring

    @property
    def batch_reference_style(self) -> sparse.csr_matrix | None:
        """The reference outputs' style counts, one row per output of :attr:`batch_reference_prompt_keys`."""
        if self.batch_reference_style_values is None or self.batch_reference_style_columns is None \
                or self.batch_reference_style_rows is None:
            return None
        n = len(self.batch_reference_style_rows) - 1
        return sparse.csr_matrix((self.batch_reference_style_values, self.batch_reference_style_columns,
                                  self.batch_reference_style_rows), shape=(n, STYLE_WIDTH))

    @cached_property
    def spec(self) -> ScorerSpec:
        """The scorer specification, typed."""
        return ScorerSpec.from_stored(self.scorer)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """Conformal p-values of nonconformity ``scores`` against this baseline's calibration part.

        Baselines built since prompt-level calibration compare with one drawn
        calibration output per prompt (``calibration_method`` ``prompt_sample``:
        the default where it reaches nearer alpha, and always under ``delta``) or
        with every calibration output, each prompt weighing the same
        (``prompt_weighted``); older ones treat every calibration output as one
        exchangeable unit.
        """
        # Imported here: conformal needs SciPy, and the ledger verbs load this module without scoring.
        from conformance.stats.conformal import conformal_p_values, prompt_weighted_p_values

        if self.spec.p_value_rule == "prompt_weighted":
            if self.calibration_prompt_keys is None or self.calibration_scores_by_record is None:
                raise BaselineError("a prompt-weighted baseline must carry its calibration prompt keys and scores")
            return prompt_weighted_p_values(scores, np.asarray(self.calibration_scores_by_record),
                                            self.calibration_prompt_keys)
        return conformal_p_values(scores, self.calibration_scores)

    @property
    def n_calibration_prompts(self) -> int:
        """The number of exchangeable calibration units the p-values rest on (for a baseline
        calibrated before prompts counted: its calibration outputs)."""
        return len(self.calibration_used) if self.calibration_used is not None else self.n_calibration

    @property
    def n_fit(self) -> int:
        return len(self.reference_records)

    @property
    def n_calibration(self) -> int:
        return int(self.calibration_scores.shape[0])

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, as plain JSON-able values, in the current format."""
        return {
            "format_version": FORMAT_VERSION,
            "model_version": self.model_version,
            "input_class": self.input_class,
            "alpha": self.alpha,
            "scorer": self.scorer,
            "reference_records": self.reference_records,
            "calibration_record_ids": self.calibration_record_ids,
            "descriptors": self.descriptors,
            "embedder": self.embedder,
            "lineage": self.lineage,
        } | {
            name: getattr(self, name)
            for name in ("calibration_prompt_keys", "calibration_scores_by_record", "calibration_used",
                         "batch_calibration_scores_by_record", "batch_reference_prompt_keys")
            if getattr(self, name) is not None
        }

    def to_dict(self) -> dict[str, Any]:
        """A summary (no arrays), for printing and registry tags."""
        return {
            "model_version": self.model_version,
            "input_class": self.input_class,
            "alpha": self.alpha,
            "n_fit": self.n_fit,
            "n_calibration": self.n_calibration,
            "scorer": self.scorer,
            "digest": self.digest,
            "format_version": self.format_version,
        }

    def save(self, directory: str | Path) -> Path:
        """Write this baseline into ``directory`` (``baseline.json`` and ``arrays.npz``, no pickle)."""
        return save_baseline(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> Baseline:
        """Load a baseline written by :meth:`save` (any readable format version) and check its digest."""
        return load_baseline(directory)

    def check_embedder(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to score with an embedder other than the one this baseline was built with."""
        if fingerprint != self.embedder:
            keys = set(fingerprint) | set(self.embedder)
            diffs = sorted(k for k in keys if fingerprint.get(k) != self.embedder.get(k))
            raise EmbedderMismatchError(
                f"baseline for ({self.model_version}, {self.input_class}) was built with embedder "
                f"{self.embedder.get('model')} ({self.embedder.get('source')}), but scoring uses "
                f"{fingerprint.get('model')} ({fingerprint.get('source')}); they differ in: {', '.join(diffs)}. "
                "Score with the embedder the baseline was built with, or rebuild and re-approve the baseline."
            )


def _array_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    digest = hashlib.sha256()
    # The four arrays of format 1 first, then any scorer state and optional arrays in name order:
    # a baseline without them hashes exactly as in format 1.
    for name in (*_ARRAYS, *sorted(n for n in arrays if n not in _ARRAYS)):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(str(arr.dtype).encode())
        digest.update(json.dumps(list(arr.shape)).encode())
        digest.update(arr.tobytes())
    return digest.digest()


def compute_digest(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over canonical JSON of the metadata and the raw bytes of every array."""
    digest = hashlib.sha256()
    digest.update(json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    digest.update(_array_bytes(arrays))
    return "sha256:" + digest.hexdigest()


def with_digest(baseline: Baseline) -> Baseline:
    """Return the baseline with its content digest filled in."""
    digest = compute_digest(baseline.metadata(), _all_arrays(baseline))
    return Baseline(**{**baseline.metadata(), **{n: getattr(baseline, n) for n in _ARRAYS}, "digest": digest,
                       "scorer_state": dict(baseline.scorer_state),
                       **{n: getattr(baseline, n) for n in _OPTIONAL_ARRAYS}})


def _all_arrays(baseline: Baseline) -> dict[str, np.ndarray]:
    arrays = {name: getattr(baseline, name) for name in _ARRAYS}
    arrays.update({name: getattr(baseline, name) for name in _OPTIONAL_ARRAYS if getattr(baseline, name) is not None})
    arrays.update({_STATE_PREFIX + name: value for name, value in baseline.scorer_state.items()})
    return arrays


def save_baseline(baseline: Baseline, directory: str | Path) -> Path:
    """Write ``baseline.json`` and ``arrays.npz`` into ``directory`` (each atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = _all_arrays(baseline)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
    # The digest of what is written: the baseline's own, unless it was migrated from an older format, in which
    # case the file is a new artifact of the current format (to be registered and approved as such).
    meta = baseline.metadata() | {"digest": compute_digest(baseline.metadata(), arrays)}
    atomic_write_bytes(directory / ARRAYS_FILE, buffer.getvalue())
    atomic_write_bytes(
        directory / META_FILE, json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8")
    )
    return directory


def load_baseline(directory: str | Path) -> Baseline:
    """Load a baseline written by :func:`save_baseline` and check its digest."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise KeyError(f"arrays missing: {', '.join(missing)}")
    except (OSError, ValueError, KeyError) as exc:
        raise BaselineError(f"{directory}: not a readable baseline ({exc})") from exc
    version = meta.get("format_version")
    if version not in READABLE_FORMATS:
        raise BaselineError(
            f"{directory}: baseline format version {version} is not supported by this release "
            f"(it reads versions {', '.join(map(str, READABLE_FORMATS))}); upgrade conformance"
        )
    if version == 1 and set(arrays) != set(_ARRAYS):
        raise BaselineError(f"{directory}: a format 1 baseline holds exactly {', '.join(_ARRAYS)}; "
                            f"found {', '.join(sorted(arrays))}")
    stored = meta.pop("digest", "")
    actual = compute_digest(meta, arrays)
    if stored != actual:
        raise BaselineError(
            f"{directory}: baseline content does not match its digest (stored {stored}, computed {actual}); "
            "the files were altered after the baseline was built — rebuild it and have it approved again"
        )
    state = {name[len(_STATE_PREFIX):]: arrays.pop(name) for name in list(arrays) if name.startswith(_STATE_PREFIX)}
    unknown = sorted(set(arrays) - set(_ARRAYS) - set(_OPTIONAL_ARRAYS))
    if unknown:
        raise BaselineError(f"{directory}: unknown arrays in the baseline: {', '.join(unknown)}")
    for step in range(int(version), FORMAT_VERSION):
        meta, arrays = MIGRATIONS[step](meta, arrays)
    meta.pop("format_version")
    return Baseline(**meta, **arrays, digest=stored, scorer_state=state,
                    migrated_from=None if version == FORMAT_VERSION else int(version))


def _migrate_1_to_2(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Format 2 only added what format 1 could not hold (scorer state, per-record calibration fields)."""
    return meta | {"format_version": 2}, arrays


def _migrate_2_to_3(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Make every field of the scorer explicit, with the value the release that built it used when it
    stored none: p-values with every calibration output one unit, no conditional guarantee; batch tests
    on outputs, on the per-output score and on pooled embeddings, unless the baseline carries what the
    prompt unit, the batch rule or the residual embeddings need."""
    scorer = explicit_scorer(
        meta["scorer"],
        batch_unit="prompt" if meta.get("calibration_prompt_keys") is not None
        and meta.get("calibration_scores_by_record") is not None else "output",
        batch_score="batch_rule" if meta.get("batch_calibration_scores_by_record") is not None else "score",
        batch_embedding="residual" if arrays.get("calibration_residuals") is not None else "pooled",
    )
    return meta | {"format_version": 3, "scorer": scorer}, arrays


def _migrate_3_to_4(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A baseline built before the conditional batch test keeps the batch tests it was built with: the four
    tests against its calibration part."""
    return meta | {"format_version": 4, "scorer": meta["scorer"] | {"batch_test": "calibration"}}, arrays


def _migrate_4_to_5(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Format 5 only added the reference's style counts: a baseline built before has none, and its conditional
    batch test keeps its three statistics."""
    return meta | {"format_version": 5}, arrays


def _migrate_5_to_6(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Format 6 only allowed input-relative descriptors among the score's components: a baseline built before has
    none, and its score takes the language of its outputs alone."""
    return meta | {"format_version": 6}, arrays


def _migrate_6_to_7(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A conditional baseline built before format 7 keeps the batch test it was built with: every statistic its
    views allow (``style_mmd`` only with style counts, format 5 on), combined by minP."""
    scorer = dict(meta["scorer"])
    if scorer.get("batch_test") == "conditional":
        has_style = arrays.get("batch_reference_style_values") is not None
        scorer |= {"batch_statistics": list(_STATISTICS_BEFORE_8 if has_style else _STATISTICS_BEFORE_8[:3]),
                   "batch_combination": "minP"}
    return meta | {"format_version": 7, "scorer": scorer}, arrays


def _migrate_7_to_8(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Format 8 only added the shape tokens to the style counts: a baseline built before stored the first two
    blocks (read with the full width, its shape block is empty), and its test names no ``shape_mmd``."""
    statistics = meta["scorer"].get("batch_statistics", ())
    if "shape_mmd" in statistics:
        raise BaselineError("a baseline of format 7 cannot combine shape_mmd: its style counts hold no shape tokens; "
                            "rebuild it with this release")
    return meta | {"format_version": 8}, arrays


#: ``MIGRATIONS[n]`` turns the metadata and arrays of format ``n`` into those of format ``n + 1``.
MIGRATIONS: dict[int, Callable[[dict[str, Any], dict[str, np.ndarray]], tuple[dict[str, Any], dict[str, Any]]]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
    5: _migrate_5_to_6,
    6: _migrate_6_to_7,
    7: _migrate_7_to_8,
}
