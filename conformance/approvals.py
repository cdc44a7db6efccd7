"""Approving and revoking baseline versions: checked first, recorded in the ledger, then kept in the registry.

Order of the steps, so that a crash between any two never leaves a version that ``score`` would use without
a ledger approval:

1. every version to approve is loaded from the registry (its content digest computed from the artifact) and
   every check runs (the version exists, the approver is not its builder when that is required); any problem
   stops everything before anything is written;
2. the ledger records all the approvals in one transaction (all or none);
3. the registry keeps each one as numbered history tags, then ``approved_by``/``approved_at`` and the alias.

A crash after 2 leaves approvals in the ledger whose alias has not moved: ``score`` goes on with the versions
approved before, and running the same command again finishes the registry's part without recording twice.
The registry has no transactions: a crash in 3 may have moved some aliases and not others; each moved alias
points to a version the ledger shows approved in that same decision. A revocation runs in the same order:
ledger, history tags, then the alias is removed; ``score`` refuses a version whose newest ledger entry is a
revocation even while its alias is still there.

``score`` checks each approved version it uses against the ledger (:class:`ApprovalCheck`): the newest
approval of that name and version must be of the digest of the artifact as loaded.
"""

from __future__ import annotations

import getpass
import json
import os
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from conformance.defaults import default_store_dir
from conformance.errors import BaselineError, RegistryError

if TYPE_CHECKING:
    from conformance.baseline.format import Baseline
    from conformance.ledger import Ledger
    from conformance.ledger.approval import ApprovalRecord
    from conformance.registry import RegisteredBaseline, Registry

DISTINCT_ENV = "CONFORMANCE_REQUIRE_DISTINCT_APPROVER"
SETTINGS_FILE = "settings.json"
BUILD_ID_TAG = "build_id"
BUILT_BY_TAG = "built_by"


def new_build_id() -> str:
    """The id shared by the versions one ``build`` registers: UTC time (sortable) and a random suffix."""
    return "build-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def default_builder() -> str:
    """The operating system's user name, for ``build --built-by`` left out (``unknown`` when there is none)."""
    try:
        return getpass.getuser().strip() or "unknown"
    except (OSError, KeyError):
        return "unknown"


def require_distinct_default() -> bool:
    """The store's default for ``--require-distinct-approver``: ``CONFORMANCE_REQUIRE_DISTINCT_APPROVER``
    (1/true/yes or 0/false/no) when set, else ``require_distinct_approver`` in ``./conformance_store/settings.json``,
    else off."""
    env = os.environ.get(DISTINCT_ENV, "").strip().lower()
    if env:
        if env in ("1", "true", "yes", "on"):
            return True
        if env in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{DISTINCT_ENV} must be 1/true/yes or 0/false/no, got {env!r}")
    path = default_store_dir() / SETTINGS_FILE
    if not path.is_file():
        return False
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable as JSON ({exc}); fix or remove it") from exc
    value = settings.get("require_distinct_approver", False) if isinstance(settings, dict) else None
    if not isinstance(value, bool):
        raise ValueError(f"{path}: require_distinct_approver must be true or false, got {value!r}")
    return value


def same_person(a: str | None, b: str | None) -> bool:
    """Whether two recorded names are one person's, case and spacing aside."""
    if a is None or b is None:
        return False
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


@dataclass(frozen=True)
class Target:
    """A registered version to approve, as loaded: its content digest is the artifact's."""

    registered: RegisteredBaseline
    digest: str
    current: int | None  # the version approved now, if any

    @property
    def built_by(self) -> str | None:
        return self.registered.tags.get(BUILT_BY_TAG)


def cell_of(registry: Registry, name: str) -> tuple[str, str]:
    """The (model_version, input_class) a registered model belongs to, from its tags."""
    model = registry._registered_model(name)
    if model is None or model.tags.get("conformance.model_version") is None:
        raise RegistryError(f"no conformance baseline is registered under the name {name!r} in {registry.uri}; "
                            "list them with `conformance baselines list`")
    return str(model.tags["conformance.model_version"]), str(model.tags["conformance.input_class"])


def target(registry: Registry, model_version: str, input_class: str, version: int | None) -> Target:
    """Load the version (default the newest) of a cell's baseline to approve."""
    name = registry.name_of(model_version, input_class)
    versions = registry._versions(name, model_version, input_class)
    if version is None:
        version = max(versions)
    elif version not in versions:
        raise RegistryError(f"{name} has no version {version} (it has {', '.join(map(str, sorted(versions)))}); "
                            "pass one of those to --version")
    registered, baseline = registry.load_version(name, version)
    if (baseline.model_version, baseline.input_class) != (model_version, input_class):
        raise RegistryError(f"models:/{name}/{version} holds the baseline of ({baseline.model_version}, "
                            f"{baseline.input_class}), not of ({model_version}, {input_class})")
    return Target(registered, baseline.digest, registry.approved_version(model_version, input_class))


def targets_of_build(registry: Registry, build: str) -> list[Target]:
    """Every version registered by one ``build`` (by its build id, or the id of one of its MLflow runs)."""
    found = _all_pages(registry, "search_model_versions", "the versions of")
    build_id = build
    by_run = [v for v in found if v.run_id == build]
    if by_run:
        build_id = dict(by_run[0].tags).get(BUILD_ID_TAG) or ""
        if not build_id:
            return [target(registry, *cell_of(registry, by_run[0].name), int(by_run[0].version))]
    versions = [v for v in found if dict(v.tags).get(BUILD_ID_TAG) == build_id]
    if not versions:
        raise RegistryError(f"no baseline version in {registry.uri} was registered by build {build!r} (neither a "
                            f"build id nor a build's run id); `conformance baselines show NAME` gives a version's "
                            "build_id")
    newest: dict[str, int] = {}  # a baseline of the build registered again (same lineage): its newest version
    for v in versions:
        newest[v.name] = max(newest.get(v.name, 0), int(v.version))
    return [target(registry, *cell_of(registry, name), version) for name, version in sorted(newest.items())]


def check(targets: list[Target], *, by: str, require_distinct: bool) -> None:
    """Every check of an approval, all problems at once; nothing is approved when one fails."""
    problems = []
    names = [t.registered.name for t in targets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"{', '.join(twice)}: named twice; approve one version per registered model at a time")
    if require_distinct:
        for t in targets:
            if t.built_by is None:
                problems.append(f"{t.registered.uri}: its builder is not recorded (it was registered before "
                                "builders were), so a distinct approver cannot be checked; rebuild it, or approve "
                                "without --require-distinct-approver")
            elif same_person(t.built_by, by):
                problems.append(f"{t.registered.uri} was built by {t.built_by!r}: a distinct approver is required, "
                                "so another person must approve it")
    if problems:
        raise RegistryError("nothing was approved:\n  " + "\n  ".join(problems))


def approve(registry: Registry, ledger: Ledger, targets: list[Target], *, by: str,
            require_distinct: bool) -> list[tuple[RegisteredBaseline, ApprovalRecord]]:
    """Approve every target, in the order of the module's docstring; all checked first."""
    from conformance.ledger.approval import APPROVAL, ApprovalRequest, record
    from conformance.registry import history

    check(targets, by=by, require_distinct=require_distinct)
    requests = [ApprovalRequest(APPROVAL, t.registered.name, t.registered.model_version, t.registered.input_class,
                                t.registered.version, t.digest, by,
                                replaced=None if t.current in (None, t.registered.version) else t.current)
                for t in targets]
    recorded = record(ledger, requests)
    out = []
    for t, rec in zip(targets, recorded):
        name, version = t.registered.name, t.registered.version
        history.add_event(registry, name, version, APPROVAL, by=rec.by, at=rec.at, digest=rec.digest,
                          replaced=rec.replaced, reason=None, ledger_seq=rec.seq)
        history.make_current(registry, name, version, by=rec.by, at=rec.at)
        tags = dict(registry.client.get_model_version(name, str(version)).tags)
        out.append((replace(t.registered, tags=tags), rec))
    return out


def revoke(registry: Registry, ledger: Ledger, name: str, *, by: str, reason: str) -> ApprovalRecord:
    """Revoke the approved version of registered model ``name``: ledger first, then the registry's history, then
    the alias goes. A retry after an interruption finishes what the first run began."""
    from conformance.ledger.approval import REVOCATION, ApprovalRequest, history as ledger_history, record
    from conformance.registry import history

    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a revocation needs a reason: pass --reason TEXT (why it is revoked, in your words)")
    model_version, input_class = cell_of(registry, name)
    version = registry.approved_version(model_version, input_class)
    if version is None:
        past = ledger_history(ledger, name)
        if past and past[-1].action == REVOCATION:  # a revocation interrupted after its alias went, or done
            rec = past[-1]
            history.add_event(registry, name, rec.version, REVOCATION, by=rec.by, at=rec.at, digest=rec.digest,
                              replaced=None, reason=rec.reason, ledger_seq=rec.seq)
            return rec.__class__(**(rec.to_dict() | {"added": False}))
        raise RegistryError(f"{name} has no approved version to revoke in {registry.uri}; "
                            f"`conformance baselines history {name}` shows its approvals")
    registered, baseline = registry.load_version(name, version)
    (rec,) = record(ledger, [ApprovalRequest(REVOCATION, name, model_version, input_class, version, baseline.digest,
                                             by, reason=reason.strip())])
    history.add_event(registry, name, version, REVOCATION, by=rec.by, at=rec.at, digest=rec.digest, replaced=None,
                      reason=rec.reason, ledger_seq=rec.seq)
    history.clear_current(registry, name, version)
    return rec


class ApprovalCheck:
    """What ``score`` asks of each approved version it resolves: a ledger approval of the content it loaded.

    It reads the ledger the run records to, and the default ledger (``CONFORMANCE_LEDGER_URL`` or the embedded
    file) when that is another one, in this order; the first that holds an entry of the version decides.
    """

    def __init__(self, book: Ledger | None) -> None:
        from conformance.ledger import Ledger, LedgerNotFoundError, resolve_ledger_url

        self.books: list[Ledger] = [] if book is None else [book]
        self._opened: list[Ledger] = []
        if book is None or book.url != resolve_ledger_url(None):
            try:
                default = Ledger(None, create=False)
            except LedgerNotFoundError:
                default = None
            if default is not None:
                self.books.append(default)
                self._opened.append(default)

    def close(self) -> None:
        for book in self._opened:
            book.close()

    def _standing(self, name: str, version: int) -> tuple[ApprovalRecord | None, Ledger | None]:
        from conformance.ledger.approval import standing

        for book in self.books:
            found = standing(book, name, version)
            if found is not None:
                return found, book
        return None, None

    def _approved_elsewhere(self, name: str, version: int, digest: str) -> bool:
        """Whether a ledger holds an approval of this very content under this name and version: the newest entry
        of the version may be another registry's (two stores' ``conformance.a.b`` version 1 approved into one
        ledger); a swapped artifact has no approval of its own."""
        from conformance.ledger.approval import approval_of

        return any(approval_of(book, name, version, digest) is not None for book in self.books)

    def revoked(self, name: str) -> str | None:
        """Who revoked the newest revocation of ``name``, when and why, in words, when its newest entry is one."""
        from conformance.ledger.approval import REVOCATION, history

        for book in self.books:
            past = history(book, name)
            if past:
                last = past[-1]
                if last.action != REVOCATION:
                    return None
                return (f"version {last.version} was revoked by {last.by} at {last.at}: {last.reason} "
                        f"(ledger entry #{last.seq})")
        return None

    def check(self, registered: RegisteredBaseline, baseline: Baseline) -> None:
        """Raise :class:`BaselineError` unless the ledger's newest entry of this version approves this content."""
        from conformance.ledger.approval import REVOCATION

        name, version = registered.name, registered.version
        rec, book = self._standing(name, version)
        again = (f"If this version is the one to use, a person approves it again: `conformance approve "
                 f"--model-version {registered.model_version} --input-class {registered.input_class} --version "
                 f"{version} --by NAME` (this records the approval in the ledger). Nothing was scored or recorded")
        where = " and ".join(b.display_url for b in self.books) or "no ledger (none exists yet)"
        if rec is None or book is None:
            raise BaselineError(
                f"{registered.uri} is approved in the registry (approved_by {registered.tags.get('approved_by')!r}), "
                f"but {where} holds no approval of it: its alias was set outside `conformance approve`, or it was "
                f"approved before approvals were recorded in the ledger. {again}")
        if rec.action == REVOCATION:
            raise BaselineError(
                f"{registered.uri} is approved in the registry, but the ledger {book.display_url} says it was revoked "
                f"by {rec.by} at {rec.at} (entry #{rec.seq}: {rec.reason}); a revocation was interrupted: run "
                f"`conformance revoke {name} --by NAME --reason TEXT` again to finish it. {again}")
        if rec.digest != baseline.digest and not self._approved_elsewhere(name, version, str(baseline.digest)):
            raise BaselineError(
                f"{registered.uri}: the baseline as loaded has content digest {baseline.digest}, but the ledger "
                f"{book.display_url} approved digest {rec.digest} for it (entry #{rec.seq}, by {rec.by} at {rec.at}): "
                f"the baseline was changed after it was approved, whatever the registry's tags say. Restore the "
                f"approved artifact, or rebuild and have the new version approved. {again}")


def baselines(registry: Registry) -> list[dict[str, Any]]:
    """Every registered cell: its name and cell, the approved version with who and when, and the newest version."""
    from conformance.registry.history import versions_of

    models = _all_pages(registry, "search_registered_models", "the registered models")
    rows = []
    for model in sorted(models, key=lambda m: m.name):
        versions = versions_of(registry, model.name)
        approved = model.aliases.get("approved")
        current = next((v for v in versions if approved is not None and int(v.version) == int(approved)), None)
        tags = dict(current.tags) if current is not None else {}
        rows.append({"name": model.name, "model_version": model.tags.get("conformance.model_version"),
                     "input_class": model.tags.get("conformance.input_class"),
                     "approved_version": None if approved is None else int(approved),
                     "approved_by": tags.get("approved_by"), "approved_at": tags.get("approved_at"),
                     "newest_version": max((int(v.version) for v in versions), default=None),
                     "versions": len(versions)})
    return rows


def _all_pages(registry: Registry, method: str, what: str) -> list[Any]:
    """Every registered model or version whose name starts with ``conformance.``, page after page."""
    found: list[Any] = []
    token = None
    with registry._failing_loudly(f"list {what}", "conformance.*"):
        while True:
            page = getattr(registry.client, method)("name LIKE 'conformance.%'", max_results=1000, page_token=token)
            found.extend(page)
            token = getattr(page, "token", None)
            if not token:
                return found


def show(registry: Registry, name: str, version: int | None = None) -> dict[str, Any]:
    """One version of a registered model (default: the approved one, else the newest): its tags, lineage, digest
    and approval state in plain words."""
    from conformance.registry.history import events_of, versions_of

    cell_of(registry, name)
    versions = versions_of(registry, name)
    model = registry._registered_model(name)
    approved = None if model is None or model.aliases.get("approved") is None else int(model.aliases["approved"])
    numbers = [int(v.version) for v in versions]
    if version is None:
        version = approved if approved is not None else max(numbers)
    if version not in numbers:
        raise RegistryError(f"{name} has no version {version} (it has {', '.join(map(str, numbers))}); pass one of "
                            "those to --version")
    mv = next(v for v in versions if int(v.version) == version)
    tags = dict(mv.tags)
    events = [e for e in events_of(versions) if e.version == version]
    if approved == version:
        state = (f"approved: the version scoring uses, approved by {tags.get('approved_by')} at "
                 f"{tags.get('approved_at')}")
    elif events and events[-1].action == "revocation":
        e = events[-1]
        state = f"not approved: its approval was revoked by {e.by} at {e.at}: {e.reason}"
    elif events:
        e = events[-1]
        later = f"version {approved} is approved now" if approved is not None else "no version is approved now"
        state = f"not approved: approved by {e.by} at {e.at}, since replaced ({later})"
    else:
        state = "not approved: never approved" + (f" (version {approved} is approved)" if approved is not None else "")
    lineage_keys = ("eval_run_ids", "dataset_digest", "training_data_version", "policy_id", "policy_version",
                    "source_file", BUILT_BY_TAG, BUILD_ID_TAG)
    return {"name": name, "version": version, "uri": f"models:/{name}/{version}",
            "model_version": tags.get("conformance.model_version"), "input_class": tags.get("conformance.input_class"),
            "digest": tags.get("digest"), "run_id": mv.run_id, "approved": approved == version, "state": state,
            "lineage": {k: tags.get(k) for k in lineage_keys},
            "approvals": [e.to_dict() for e in events],
            "tags": {k: v for k, v in sorted(tags.items())}}


def registry_history(registry: Registry, ledger: Ledger | None, name: str) -> list[dict[str, Any]]:
    """Every approval and revocation of registered model ``name`` as the registry keeps them, in order, each with
    whether ``ledger`` holds the matching entry (``None`` when no ledger is at hand)."""
    from conformance.ledger.approval import history as ledger_history
    from conformance.registry.history import events_of, versions_of

    cell_of(registry, name)
    events = events_of(versions_of(registry, name))
    recorded = {r.seq: r for r in ledger_history(ledger, name)} if ledger is not None else {}
    rows = []
    for e in events:
        rec = recorded.get(e.ledger_seq) if e.ledger_seq is not None else None
        matches = None if ledger is None else (
            rec is not None and (rec.action, rec.version, rec.digest, rec.by) == (e.action, e.version, e.digest, e.by))
        rows.append(e.to_dict() | {"in_ledger": matches})
    return rows
