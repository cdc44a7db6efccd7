"""Reconstructing a recorded verdict from what the ledger stored.

The entry names the exact baseline version (``models:/<name>/<version>``) and
its digest, the embedder's fingerprint digest and the code version. To
reconstruct, the baseline version is fetched from the MLflow registry, the
stored output is embedded again (an embedding depends only on its text, so by
default it is taken from the embedding cache when this embedder made it) and
re-scored. The *evidence* is compared: the verdict, alpha, the nearest approved
outputs, the baseline version and digest and the embedder fingerprint exactly,
the score and p-value to within floating-point rounding (relative 1e-9: the last
digits of a float can differ between releases of numpy or of the BLAS beneath
it; such a difference is reported in a note, and a verdict it would flip is a
difference). The *wording* (the reason and the test's name) is compared apart:
a later release may explain the same figures in other words, which is reported
as "same verdict and figures; explanation worded differently", never as a
different verdict. Any difference in evidence is explained: a baseline version
since deleted or altered, another embedder, another code version, or an entry
altered since it was written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conformance import defaults
from conformance._version import __version__
from conformance.errors import BaselineError, BaselineVersionNotFoundError, EmbedderMismatchError
from conformance.ledger.canonical import entry_hash, plain
from conformance.ledger.entry import parse_baseline_uri
from conformance.verdict import INVALID, NO_BASELINE

if TYPE_CHECKING:
    from conformance.embedder import Embedder
    from conformance.ledger.store import Ledger
    from conformance.registry.mlflow_registry import Registry

IDENTICAL = "identical"
#: The evidence is identical and only the words of the explanation differ.
SAME_EVIDENCE = "same_evidence"
DIFFERENT = "different"
NOT_REPRODUCIBLE = "not_reproducible"
NOTHING_TO_RESCORE = "nothing_to_rescore"
#: What a verdict rests on: a difference in any of these is a different result.
EVIDENCE = ("verdict", "score", "p_value", "alpha", "nearest", "baseline", "baseline_digest", "embedder")
#: How it was put into words: a difference here is a rewording, reported apart.
WORDING = ("reason", "test")
REWORDED = "same verdict and figures; explanation worded differently"
#: Compared to within ``ROUNDING`` (relative): floats that numerical libraries may round differently.
ROUNDED = ("score", "p_value")
ROUNDING = 1e-9


def same_value(name: str, recorded: Any, recomputed: Any) -> bool:
    """Whether a recomputed field agrees with the recorded one: exactly, or for :data:`ROUNDED` fields to
    within a relative :data:`ROUNDING`."""
    if name in ROUNDED and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (recorded, recomputed)):
        return math.isclose(recorded, recomputed, rel_tol=ROUNDING, abs_tol=1e-300)
    return bool(recorded == recomputed)


@dataclass(frozen=True)
class Reconstruction:
    """Recorded against recomputed, with the differences and what explains them.

    ``status`` is ``identical``, ``same_evidence`` (the same verdict and
    figures, explained in other words: ``reworded`` lists which), ``different``,
    ``not_reproducible`` (the inputs needed are gone) or ``nothing_to_rescore``
    (a ``no_baseline`` verdict: no baseline was used).
    """

    record_id: str | None
    seq: int
    status: str
    recorded: dict[str, Any]
    recomputed: dict[str, Any] | None = None
    differences: list[str] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)
    reworded: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.status == IDENTICAL

    @property
    def reproduced(self) -> bool:
        """The evidence was re-derived unchanged (whatever the wording)."""
        return self.status in (IDENTICAL, SAME_EVIDENCE)

    def to_dict(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "seq": self.seq, "status": self.status, "recorded": self.recorded,
                "recomputed": self.recomputed, "differences": self.differences, "reworded": self.reworded,
                "explanations": self.explanations}


def _summary(verdict: dict[str, Any]) -> dict[str, Any]:
    return {name: verdict.get(name) for name in ("verdict", "score", "p_value", "alpha", "nearest", "baseline",
                                                 "baseline_digest", "embedder", "test", "code_version",
                                                 "scored_at", "reason")}


def reconstruct(ledger: Ledger, record_id: str, *, seq: int | None = None, registry: Registry | None = None,
                embedder: Embedder | None = None, cache: bool = True) -> Reconstruction:
    """Re-derive the verdict of ``record_id`` (its latest entry, or entry ``seq``) and compare.

    With ``cache`` the stored output's embedding is taken from the embedding cache when an embedder of
    the same fingerprint made it (``./conformance_store/embeddings.db``; exact, since an embedding depends
    on its text only), else computed and kept there; ``cache=False`` re-embeds it from its text.

    Raises
    ------
    EntryNotFoundError
        The ledger holds no such verdict entry (a reviewer's sign-off is not one).
    RegistryError
        The registry failed (a server down, a permission refused). A baseline version that the registry
        says does not exist, or whose stored content no longer matches its digest, is no error: the
        result is ``not_reproducible``, with the reason.
    """
    from conformance.records import InvalidRow, validate_row

    entry = ledger.verdict_entry(record_id, seq)
    content = entry.content
    recorded = dict(content["verdict"])
    summary = _summary(recorded)
    notes: list[str] = []
    if entry_hash(entry.content_text) != entry.entry_hash:
        notes.append(f"entry #{entry.seq} was altered after it was written (its content no longer matches its "
                     "hash); run `conformance ledger verify`")
    record = dict(content["record"])
    # A judged record passed whatever length limit its run had; an invalid one is checked against the default.
    checked = validate_row(int(recorded.get("row") or 1), record, {},
                           max_chars=defaults.MAX_TEXT_CHARS if recorded["verdict"] == INVALID else None)
    if recorded["verdict"] == INVALID:
        if isinstance(checked, InvalidRow):
            return Reconstruction(record_id, entry.seq, IDENTICAL, summary,
                                  {"verdict": INVALID, "reason": checked.reason}, [],
                                  notes + ["the stored record is still invalid on its own: " + checked.reason])
        return Reconstruction(record_id, entry.seq, DIFFERENT, summary, {"verdict": "valid record"},
                              ["verdict: recorded invalid, but the stored record is valid on its own"],
                              notes + ["it was judged invalid within its file (for instance a duplicate record_id), "
                                       "which the record alone cannot show; the recorded reason says why"])
    if recorded["verdict"] == NO_BASELINE:
        return Reconstruction(record_id, entry.seq, NOTHING_TO_RESCORE, summary, None, [],
                              notes + ["no baseline was used, so there is no score to reproduce; the recorded "
                                       "reason says why: " + str(recorded.get("reason"))])
    name, version = parse_baseline_uri(recorded.get("baseline"))
    if name is None or version is None or isinstance(checked, InvalidRow):
        return Reconstruction(record_id, entry.seq, NOT_REPRODUCIBLE, summary, None, [],
                              notes + [f"the entry names no versioned baseline ({recorded.get('baseline')!r}) "
                                       "or holds no valid record; it cannot be re-scored"])
    from conformance.embedder import embed_inputs, embedder_for, fingerprint_digest, get_embedder
    from conformance.embedding_cache import CachedEmbedder, default_cache_path
    from conformance.registry.mlflow_registry import Registry
    from conformance.scoring.judge import judge

    registry = registry or Registry()
    try:
        _, baseline = registry.load_version(name, version)
    except (BaselineVersionNotFoundError, BaselineError) as exc:  # gone or altered; a failing store raises
        return Reconstruction(record_id, entry.seq, NOT_REPRODUCIBLE, summary, None, [],
                              notes + [f"baseline {recorded['baseline']} can no longer be loaded from the registry "
                                       f"at {registry.uri} (deleted, or another tracking store?): "
                                       f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"])
    if baseline.digest != recorded.get("baseline_digest"):
        notes.append(f"baseline {recorded['baseline']} now has digest {baseline.digest}, but the verdict was scored "
                     f"against digest {recorded.get('baseline_digest')}: the registered artifact was replaced")
    if embedder is None:
        try:
            embedder = embedder_for(baseline.embedder)  # the baseline's backend
        except EmbedderMismatchError:
            embedder = get_embedder()  # reported below as another embedder
    if cache and not isinstance(embedder, CachedEmbedder):
        embedder = CachedEmbedder(embedder, path=default_cache_path())
    now_fp = fingerprint_digest(embedder.fingerprint)
    if now_fp != fingerprint_digest(baseline.embedder):
        return Reconstruction(record_id, entry.seq, NOT_REPRODUCIBLE, summary, None, [],
                              notes + [f"the embedder here (fingerprint {now_fp}, {embedder.fingerprint.get('model')}) "
                                       f"is not the one baseline {recorded['baseline']} was built with "
                                       f"(fingerprint {fingerprint_digest(baseline.embedder)}); "
                                       "re-score with that embedder"])
    embedded = embedder.embed([checked.output], progress=False, desc="re-embedding the stored output")
    inputs = embed_inputs(embedder, [checked.input]) if baseline.spec.is_combined else None
    new = judge(baseline, str(recorded["baseline"]), [checked], embedded,
                scored_at=str(recorded.get("scored_at")), inputs=inputs)[0]
    recomputed = _summary(plain(new.to_dict()) | {"nearest": list(new.nearest)})
    differences = [f"{name_}: recorded {summary[name_]!r}, recomputed {recomputed[name_]!r}"
                   for name_ in EVIDENCE if not same_value(name_, summary[name_], recomputed[name_])]
    reworded = [f"{name_}: recorded {summary[name_]!r}, recomputed {recomputed[name_]!r}"
                for name_ in WORDING if summary[name_] != recomputed[name_]]
    rounding = [f"{name_}: recorded {summary[name_]!r}, recomputed {recomputed[name_]!r}; equal to within "
                f"floating-point rounding (relative {ROUNDING:g}: the numerical libraries installed here round the "
                "last digits differently)"
                for name_ in ROUNDED if summary[name_] != recomputed[name_]
                and same_value(name_, summary[name_], recomputed[name_])]
    if not differences and reworded:
        return Reconstruction(record_id, entry.seq, SAME_EVIDENCE, summary, recomputed, [],
                              notes + [REWORDED + f" (by conformance {recorded.get('code_version')} then, "
                                                  f"{__version__} now)"] + rounding, reworded)
    if not differences:
        return Reconstruction(record_id, entry.seq, IDENTICAL, summary, recomputed, [], notes + rounding)
    if recorded.get("code_version") != __version__:
        notes.append(f"the verdict was scored by conformance {recorded.get('code_version')} and reconstructed by "
                     f"{__version__}; the scoring code may have changed between them")
    if not notes:
        notes.append("same baseline digest, embedder and code version, yet the result differs: this should not "
                     "happen; please report it with this output")
    return Reconstruction(record_id, entry.seq, DIFFERENT, summary, recomputed, differences, notes + rounding,
                          reworded)
