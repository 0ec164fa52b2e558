"""Applying one batch of directory entries (read as canonical dicts) in one transaction: the
checks of a write (authority, shielding, archive, consent, version), the merge of what the
caller may not see, and created / updated / unchanged told apart (see
``adapter.services.directory_import`` for the rules and ``entry_rows`` for the bulk insert)."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy.orm import Session

from adapter import codes
from adapter.errors import Conflict, Forbidden, GatewayError, Invalid
from adapter.models import Child
from adapter.models.canonical import (
    Canonical,
    ChildRecord,
    canonical_dump,
    organisation_key,
    without_meta,
)
from adapter.security import audit
from adapter.security.caller import Caller
from adapter.security.policy import may_see_involvement, may_see_local_identifier
from adapter.services import history
from adapter.services.children import child_query
from adapter.services.directory_import import (
    ImportKind,
    Pending,
    applied,
    own_codes,
    rejected,
)
from adapter.services.entry_rows import entry_retention, insert_entries, involvement_key
from adapter.services.records import apply_child

NOT_YOURS: Final = "not your authority: "


def check_parts(data: Canonical) -> None:
    """Check what the XSD cannot: each involvement once; a sensitive one with its basis.

    :raises Invalid: an involvement listed twice, or a sensitive one without consent basis.
    """
    seen: set[str] = set()
    for index, involvement in enumerate(data["involvements"], start=1):
        where = f"DirectoryEntry/Involvement[{index}]"
        sensitive = involvement["sensitive"] or involvement["role"] in codes.SENSITIVE_ROLES
        if sensitive and not (involvement["sensitive"] and involvement["consent_basis"]):
            # DOMAIN.md "Sensitive services": recorded only with consent or on suspicion of
            # significant harm.
            raise Invalid("a sensitive service's involvement needs its consent basis",
                          expression=f"{where}/SensitiveService")
        key = involvement_key(involvement)
        if key in seen:
            raise Invalid("the same involvement (role, organisation, practitioner, start) is "
                          "listed twice", expression=where)
        seen.add(key)


def check_writable(data: Canonical, existing: Child | None, caller: Caller) -> None:
    """Check that ``caller`` may write this entry (issue 5 item 3, DOMAIN.md).

    :raises Forbidden: another authority's entry, a shielded one without the right, or an
        archived one without the admin right.
    """
    if caller.has_right("admin"):
        return
    if caller.organisation_code not in own_codes(data["managing_organisation"]):
        raise Forbidden(NOT_YOURS + "the entry's managing authority is not your organisation",
                        expression="DirectoryEntry/ManagingAuthority")
    if existing is None:
        return
    stored = existing.managing_organisation
    if caller.organisation_code not in {stored.ods_code, stored.urn, stored.gss_code}:
        raise Forbidden(NOT_YOURS + "the stored entry is managed by another authority (an "
                        "entry moves between authorities by agreement)",
                        expression="DirectoryEntry/ManagingAuthority")
    if existing.shielded and not caller.has_right("shielded"):
        raise Forbidden("the entry is shielded: changing it needs the shielding right",
                        expression="DirectoryEntry")
    if existing.record_status == "archived":
        raise Forbidden("the entry is archived: only an administrator may change it",
                        expression="DirectoryEntry/RecordStatus")


def _with_hidden(incoming: list[Canonical], stored: list[Canonical], hidden: list[int],
                 key: Any) -> list[Canonical]:
    """Return ``incoming`` with the stored items at the ``hidden`` indexes put back at their
    stored places (unless the caller sent them itself)."""
    merged = list(incoming)
    sent = {key(item) for item in incoming}
    for index in hidden:
        if key(stored[index]) not in sent:
            merged.insert(min(index, len(merged)), stored[index])
    return merged


def _local_key(item: Canonical) -> tuple[Any, ...]:
    """Return the key of a local identifier dict: issuing organisation and value."""
    return organisation_key(item["organisation"]), item["value"]


def merge_withheld(data: Canonical, stored: Canonical, existing: Child,
                   caller: Caller) -> Canonical:
    """Return the entry ``data`` with what the policy withholds from ``caller`` kept as stored:
    sensitive involvements (without the right) and other organisations' local identifiers.

    What a caller may not see it cannot change or remove (as the FHIR Patient and CareTeam
    writes keep them).
    """
    hidden_involvements = [i for i, inv in enumerate(existing.involvements)
                           if not may_see_involvement(inv, caller)]
    hidden_ids = [i for i, li in enumerate(existing.local_identifiers)
                  if not may_see_local_identifier(li, caller)]
    merged = dict(data)
    merged["retention_date"] = entry_retention(data)
    if hidden_involvements:
        merged["involvements"] = _with_hidden(data["involvements"], stored["involvements"],
                                              hidden_involvements, involvement_key)
    if hidden_ids:
        merged["local_identifiers"] = _with_hidden(
            data["local_identifiers"], stored["local_identifiers"], hidden_ids, _local_key)
    return merged


def comparable(data: Canonical) -> Canonical:
    """Return an entry dict without what a comparison with a stored dump must ignore."""
    return {key: value for key, value in without_meta(data).items() if key != "redacted"}


class EntryBatch:
    """One batch of directory entries applied in one transaction."""

    def __init__(self, session: Session, caller: Caller, detail: str) -> None:
        self.session, self.caller, self.detail = session, caller, detail

    def apply(self, pending: list[Pending]) -> dict[int, Any]:
        """Apply the batch; return each record's outcome by its position."""
        cpids = [item.data["contactpoint_id"] for item in pending]
        stored = {child.contactpoint_id: child for child in self.session.scalars(
            child_query().where(Child.contactpoint_id.in_(cpids))).unique()}
        outcomes: dict[int, Any] = {}
        fresh: list[Pending] = []
        for item in pending:
            existing = stored.get(item.data["contactpoint_id"])
            try:
                check_parts(item.data)
                check_writable(item.data, existing, self.caller)
                if existing is None:
                    fresh.append(item)
                else:
                    outcomes[item.position] = self._update(item, existing)
            except GatewayError as error:
                outcomes[item.position] = rejected(item, error, item.data["contactpoint_id"])
        self.session.flush()
        if fresh:
            insert_entries(self.session, [item.data for item in fresh], self.caller,
                           self.detail)
            outcomes.update({item.position: applied(item, "created",
                                                    item.data["contactpoint_id"])
                             for item in fresh})
        return outcomes

    def _update(self, item: Pending, existing: Child) -> Any:
        """Apply a record onto its stored entry (nothing at all when they are equal).

        :raises Conflict: the record names an older version than the stored one.
        """
        cpid = existing.contactpoint_id
        stored = canonical_dump(existing, meta=False)
        merged = merge_withheld(item.data, stored, existing, self.caller)
        if comparable(merged) == stored:
            return applied(item, "unchanged", cpid)
        version = item.data.get("version")
        if version is not None and version != existing.version:
            raise Conflict(f"the entry changed after version {version}, which this record "
                           f"was read at (now version {existing.version}): read it again and "
                           "re-apply the change", expression="DirectoryEntry/@version")
        before = history.child_snapshot(existing)
        child, status = apply_child(self.session, ChildRecord(comparable(merged)).child,
                                    existing)
        if status != "unchanged":
            self.session.add(before)
            audit.record(self.session, "import-update", resource_type="Patient",
                         resource_id=child.resource_id, child_ref=child.resource_id,
                         caller=self.caller, detail=self.detail)
        return applied(item, status, cpid)


def _apply_entries(session: Session, caller: Caller, pending: list[Pending],
                   detail: str) -> dict[int, Any]:
    """Apply a batch of entries (``ImportKind.apply``)."""
    return EntryBatch(session, caller, detail).apply(pending)


ENTRY_KIND: Final = ImportKind("directory entries", lambda data: str(data["contactpoint_id"]),
                               _apply_entries, lambda data: data.get("contactpoint_id"))
