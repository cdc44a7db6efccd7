"""Approvals and revocations in the MLflow registry: a history that is never overwritten, and the current state.

Each approval or revocation of a version is kept as that version's own tags, numbered in the order of the
registered model's history (one sequence across its versions, so the history reads in order):
``approval.<n>.by``, ``.at``, ``.digest``, ``.replaced``, ``.ledger_seq``; ``revocation.<n>.`` the same with
``.reason``. ``<n>`` is never reused, so a later decision never overwrites an earlier one.

The tags ``approved_by`` and ``approved_at`` say who approved the *current* approval and when; they are on
the version the alias ``approved`` points to and on no other (a version whose alias moved on, or that was
revoked, loses them, so that it does not look approved).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conformance.registry.mlflow_registry import Registry

APPROVED_ALIAS = "approved"
CURRENT_TAGS = ("approved_by", "approved_at", "supersedes_version")
_EVENT = re.compile(r"^(?P<action>approval|revocation)\.(?P<n>\d+)\.(?P<field>[a-z_]+)$")
EVENT_FIELDS = ("by", "at", "digest", "replaced", "reason", "ledger_seq")


@dataclass(frozen=True)
class RegistryEvent:
    """One approval or revocation as the registry's tags keep it."""

    n: int
    action: str
    version: int
    by: str | None
    at: str | None
    digest: str | None
    replaced: int | None
    reason: str | None
    ledger_seq: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def versions_of(registry: Registry, name: str) -> list[Any]:
    """Every version of a registered model (MLflow's ``ModelVersion`` objects, with their tags), oldest first."""
    with registry._failing_loudly("list the versions of", name):
        found = registry.client.search_model_versions(f"name='{name}'")
    return sorted(found, key=lambda v: int(v.version))


def events_of(versions: Iterable[Any]) -> list[RegistryEvent]:
    """The approvals and revocations kept in the versions' tags, in the order of the history."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for v in versions:
        for key, value in dict(v.tags).items():
            match = _EVENT.match(key)
            if match is None or match["field"] not in EVENT_FIELDS:
                continue
            slot = found.setdefault((match["action"], int(match["n"])), {"version": int(v.version)})
            slot[match["field"]] = value
    return sorted((RegistryEvent(n, action, e["version"], e.get("by"), e.get("at"), e.get("digest"),
                                 _int(e.get("replaced")), e.get("reason"), _int(e.get("ledger_seq")))
                   for (action, n), e in found.items()), key=lambda e: e.n)


def add_event(registry: Registry, name: str, version: int, action: str, *, by: str, at: str, digest: str,
              replaced: int | None, reason: str | None, ledger_seq: int) -> RegistryEvent:
    """Keep one approval or revocation as new numbered tags of the version; a retry (the same ledger entry
    already kept) adds nothing."""
    events = events_of(versions_of(registry, name))
    for event in events:
        if event.ledger_seq == ledger_seq and event.action == action and event.version == version:
            return event
    n = max((e.n for e in events), default=0) + 1
    values = {"ledger_seq": str(ledger_seq), "by": by, "at": at, "digest": digest,
              "replaced": "" if replaced is None else str(replaced)}
    if reason is not None:
        values["reason"] = reason
    with registry._failing_loudly(f"record the {action} of version {version} of", name):
        for field, value in values.items():  # ledger_seq first: a retry after a crash finds the number taken
            registry.client.set_model_version_tag(name, str(version), f"{action}.{n}.{field}", value)
    return RegistryEvent(n, action, version, by, at, digest, replaced, reason, ledger_seq)


def make_current(registry: Registry, name: str, version: int, *, by: str, at: str) -> None:
    """Point the alias ``approved`` at ``version`` with who and when, and take those tags off every other version.

    The tags go on before the alias moves, and come off the others after: a version the alias points to always
    says who approved it.
    """
    with registry._failing_loudly(f"approve version {version} of", name):
        registry.client.set_model_version_tag(name, str(version), "approved_by", by)
        registry.client.set_model_version_tag(name, str(version), "approved_at", at)
        registry.client.set_registered_model_alias(name, APPROVED_ALIAS, str(version))
        for v in versions_of(registry, name):
            if int(v.version) != version:
                _clear_tags(registry, name, v)


def clear_current(registry: Registry, name: str, version: int) -> None:
    """Remove the alias ``approved`` from ``version`` (when it points there) and the version's current-approval tags."""
    with registry._failing_loudly(f"revoke version {version} of", name):
        model = registry.client.get_registered_model(name)
        if model.aliases.get(APPROVED_ALIAS) is not None and int(model.aliases[APPROVED_ALIAS]) == version:
            registry.client.delete_registered_model_alias(name, APPROVED_ALIAS)
        for v in versions_of(registry, name):
            if int(v.version) == version:
                _clear_tags(registry, name, v)


def _clear_tags(registry: Registry, name: str, version: Any) -> None:
    for key in CURRENT_TAGS:
        if key in dict(version.tags):
            registry.client.delete_model_version_tag(name, str(version.version), key)
