"""Applying one batch of directory entries (read as canonical dicts) in one transaction: the
checks of a write (authority, shielding, archive, consent, version), the merge of what the
caller may not see, and created / updated / unchanged told apart (see
``adapter.imports.directory`` for the rules and ``entry_rows`` for the bulk insert)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from sqlalchemy.orm import Session

from adapter import codes
from adapter.errors import Conflict, ExistingEntry, Forbidden, GatewayError, Invalid
from adapter.imports.directory import (
    ImportKind,
    Pending,
    applied,
    rejected,
)
from adapter.imports.rows import (
    BatchKeys,
    SharedRows,
    described_in_entry,
    entry_retention,
    insert_entries,
    involvement_key,
    with_national_only_practitioners,
)
from adapter.imports.stored import StoredEntry, load_stored
from adapter.models import Child, Involvement, LocalIdentifier, Organisation
from adapter.models.canonical import Canonical, ChildRecord, organisation_key, without_meta
from adapter.security import audit
from adapter.security.caller import Caller
from adapter.security.policy import (
    is_administrator,
    may_see_involvement,
    may_see_local_identifier,
    may_write_child,
    require_shared_unchanged,
)
from adapter.store import history
from adapter.store.children import child_query
from adapter.store.entry_rules import (
    ONE_LIVE_ENTRY,
    age_rules_apply,
    duplicate_refusal,
    live_holders,
    require_within_age_rules,
)
from adapter.store.records import apply_child

NOT_YOURS: Final = "not your authority: "
NHS_NUMBER_PATH: Final = "DirectoryEntry/NhsNumber"


def check_parts(data: Canonical, key: Callable[[Canonical], str] = involvement_key) -> None:
    """Check what the XSD cannot: each involvement once; a sensitive one with its basis.
    ``key`` makes an involvement's natural key (a batch's ``BatchKeys.involvement``).

    :raises Invalid: an involvement listed twice, or a sensitive one without consent basis.
    """
    seen: set[str] = set()
    for index, involvement in enumerate(data["involvements"], start=1):
        where = f"DirectoryEntry/Involvement[{index}]"
        sensitive = involvement["sensitive"] or involvement["role"] in codes.SENSITIVE_ROLES
        if sensitive and not (involvement["sensitive"] and involvement["consent_basis"]):
            # docs/domain.md "Sensitive services": recorded only with consent or on suspicion of
            # significant harm.
            raise Invalid("a sensitive service's involvement needs its consent basis",
                          expression=f"{where}/SensitiveService")
        natural = key(involvement)
        if natural in seen:
            raise Invalid("the same involvement (role, organisation, practitioner, start) is "
                          "listed twice", expression=where)
        seen.add(natural)


def check_writable(data: Canonical, existing: StoredEntry | None, caller: Caller) -> None:
    """Check that ``caller`` may write this entry (docs/domain.md "The directory entry").

    :raises Forbidden: another authority's entry, a shielded one without the right, or an
        archived one without the admin right.
    """
    if is_administrator(caller):
        return
    if not may_write_child(data["managing_organisation"], caller):
        raise Forbidden(NOT_YOURS + "the entry's managing authority is not your organisation",
                        expression="DirectoryEntry/ManagingAuthority")
    if existing is None:
        return
    if not may_write_child(existing.authority_codes, caller):
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


def _involvement_visible(item: Canonical, caller: Caller) -> bool:
    """Return True when the policy shows a stored involvement dict to ``caller``."""
    return may_see_involvement(Involvement(sensitive=item["sensitive"]), caller)


def _local_identifier_visible(item: Canonical, caller: Caller) -> bool:
    """Return True when the policy shows a stored local identifier dict to ``caller``."""
    org = item["organisation"]
    issuer = Organisation(ods_code=org["ods_code"], urn=org["urn"], gss_code=org["gss_code"])
    return may_see_local_identifier(LocalIdentifier(organisation=issuer), caller)


class Visibility:
    """What the policy shows ``caller`` of stored involvements and local identifiers,
    asked once per kind for a batch: an involvement's visibility depends on whether it is
    sensitive, a local identifier's on its issuing organisation's codes."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.involvements: dict[bool, bool] = {}
        self.issuers: dict[tuple[Any, ...], bool] = {}

    def involvement(self, item: Canonical) -> bool:
        """Return True when the policy shows a stored involvement dict to the caller."""
        sensitive = bool(item["sensitive"])
        seen = self.involvements.get(sensitive)
        if seen is None:
            seen = self.involvements[sensitive] = _involvement_visible(item, self.caller)
        return seen

    def local_identifier(self, item: Canonical) -> bool:
        """Return True when the policy shows a stored local identifier dict to the caller."""
        org = item["organisation"]
        codes = (org["ods_code"], org["urn"], org["gss_code"])
        seen = self.issuers.get(codes)
        if seen is None:
            seen = self.issuers[codes] = _local_identifier_visible(item, self.caller)
        return seen


def merge_withheld(data: Canonical, stored: Canonical, caller: Caller,
                   visibility: Visibility | None = None) -> Canonical:
    """Return the entry ``data`` with what the policy withholds from ``caller`` kept as
    ``stored`` has it: sensitive involvements (without the right) and other organisations'
    local identifiers; the practitioners the dialect cannot name (known only by national
    numbers); its retention date as the rules give it.

    What a caller may not see it cannot change or remove (as the FHIR Patient and CareTeam
    writes keep them). ``visibility`` (for ``caller``) remembers the policy's answers across
    the entries of a batch.
    """
    visible = visibility or Visibility(caller)
    hidden_involvements = [i for i, item in enumerate(stored["involvements"])
                           if not visible.involvement(item)]
    hidden_ids = [i for i, item in enumerate(stored["local_identifiers"])
                  if not visible.local_identifier(item)]
    merged = dict(data)
    merged["retention_date"] = entry_retention(data)
    merged["involvements"] = with_national_only_practitioners(data["involvements"],
                                                              stored["involvements"])
    if hidden_involvements:
        merged["involvements"] = _with_hidden(merged["involvements"], stored["involvements"],
                                              hidden_involvements, involvement_key)
    if hidden_ids:
        merged["local_identifiers"] = _with_hidden(
            data["local_identifiers"], stored["local_identifiers"], hidden_ids, _local_key)
    return merged


def comparable(data: Canonical) -> Canonical:
    """Return an entry dict without what a comparison with a stored dump must ignore."""
    return {key: value for key, value in without_meta(data).items() if key != "redacted"}


class LiveEntryRules:
    """The rules on the live entries a batch makes (as a FHIR Patient write meets them,
    ``adapter.store.entry_rules``): within the directory's age rules, and one live entry
    per NHS number, against the stored entries (one query for the batch) and the batch's
    earlier records."""

    def __init__(self, session: Session, caller: Caller, pending: list[Pending]) -> None:
        self.caller = caller
        self.holders = live_holders(session, (
            item.data["nhs_number"] for item in pending if item.data.get("nhs_number")))
        self.claimed: dict[str, tuple[str, int]] = {}

    def check(self, item: Pending, existing: StoredEntry | None) -> None:
        """Check a record that creates or changes an entry.

        :raises Invalid: the person is outside the age rules (the rule quoted).
        :raises ExistingEntry: another live entry, stored or earlier in the batch, has its
            NHS number.
        """
        data = item.data
        if (data.get("record_status") or "live") != "live":
            return
        stored = existing.data if existing is not None else None
        if age_rules_apply(data["birth_date"], data["death_date"], data["extended_retention"],
                           stored["retention_date"] if stored else None,
                           existing.record_status if existing else None):
            require_within_age_rules(data["birth_date"], data["death_date"],
                                     data["extended_retention"], "DirectoryEntry/BirthDate",
                                     "DirectoryEntry/DeathDate")
        self._check_nhs_number(item)

    def _check_nhs_number(self, item: Pending) -> None:
        """Refuse a second live entry with the record's NHS number; claim it otherwise."""
        nhs_number, cpid = item.data.get("nhs_number"), str(item.data["contactpoint_id"])
        if not nhs_number:
            return
        holder = self.holders.get(nhs_number)
        if holder is not None and holder.contactpoint_id != cpid:
            raise duplicate_refusal(holder, self.caller, NHS_NUMBER_PATH)
        claim = self.claimed.get(nhs_number)
        if claim is not None and claim[0] != cpid:
            raise ExistingEntry(f"{ONE_LIVE_ENTRY} The record at position {claim[1]} of this "
                                "batch has the same NHS number.", resource=None,
                                expression=NHS_NUMBER_PATH)
        self.claimed[nhs_number] = (cpid, item.position)


class EntryBatch:
    """One batch of directory entries applied in one transaction."""

    def __init__(self, session: Session, caller: Caller, detail: str) -> None:
        self.session, self.caller, self.detail = session, caller, detail
        self.visibility = Visibility(caller)
        self.keys = BatchKeys()

    def apply(self, pending: list[Pending]) -> dict[int, Any]:
        """Apply the batch; return each record's outcome by its position."""
        stored = load_stored(self.session, [item.data["contactpoint_id"] for item in pending])
        shared = self._shared(pending)
        rules = LiveEntryRules(self.session, self.caller, pending)
        outcomes: dict[int, Any] = {}
        fresh: list[Pending] = []
        changed: list[tuple[Pending, Canonical, StoredEntry]] = []
        for item in pending:
            existing = stored.get(item.data["contactpoint_id"])
            try:
                check_parts(item.data, self.keys.involvement)
                check_writable(item.data, existing, self.caller)
                if shared is not None:
                    require_shared_unchanged(described_in_entry(item.data), shared, self.caller)
                if existing is None:
                    rules.check(item, None)
                    fresh.append(item)
                    continue
                merged = comparable(merge_withheld(item.data, existing.data, self.caller,
                                                   self.visibility))
                if merged == existing.data:
                    outcomes[item.position] = applied(item, "unchanged", _cpid(item))
                    continue
                check_version(item.data, existing)
                rules.check(item, existing)
                changed.append((item, merged, existing))
            except GatewayError as error:
                audit.record_duplicate(self.session, error, caller=self.caller)
                outcomes[item.position] = rejected(item, error, _cpid(item))
        outcomes.update(self._update(changed))
        outcomes.update(self._create(fresh))
        return outcomes

    def _shared(self, pending: list[Pending]) -> SharedRows | None:
        """Return the stored shared records the batch describes, for the write-authority
        policy to compare with (None for an administrator, who may change any of them)."""
        if is_administrator(self.caller):
            return None
        return SharedRows(self.session, (described for item in pending
                                         for described in described_in_entry(item.data)))

    def _update(self, changed: list[tuple[Pending, Canonical, StoredEntry]]) -> dict[int, Any]:
        """Apply changed records onto their entries (loaded as ORM objects), each with the
        snapshot of the version it supersedes and an ``import-update`` audit record."""
        if not changed:
            return {}
        children = {child.id: child for child in self.session.scalars(child_query().where(
            Child.id.in_([existing.id for _, _, existing in changed]))).unique()}
        outcomes = {}
        for item, merged, existing in changed:
            child = children[existing.id]
            before = history.child_snapshot(child)
            child, status = apply_child(self.session, ChildRecord(merged).child, child)
            if status != "unchanged":
                self.session.add(before)
                audit.record(self.session, "import-update", resource_type="Patient",
                             resource_id=child.resource_id, child_ref=child.resource_id,
                             caller=self.caller, detail=self.detail)
            outcomes[item.position] = applied(item, status, _cpid(item))
        self.session.flush()
        return outcomes

    def _create(self, fresh: list[Pending]) -> dict[int, Any]:
        """Insert the new entries (the bulk path)."""
        if not fresh:
            return {}
        insert_entries(self.session, [item.data for item in fresh], self.caller, self.detail,
                       self.keys)
        return {item.position: applied(item, "created", _cpid(item)) for item in fresh}


def _cpid(item: Pending) -> str:
    """Return the ContactPoint ID of a record that passed the reader."""
    return str(item.data["contactpoint_id"])


def check_version(data: Canonical, existing: StoredEntry) -> None:
    """A record that says which version it was read at applies only onto that version.

    :raises Conflict: the entry changed since (FHIR ``If-Match`` semantics: no lost update).
    """
    version = data.get("version")
    if version is not None and version != existing.version:
        raise Conflict(f"the entry changed after version {version}, which this record was "
                       f"read at (now version {existing.version}): read it again and re-apply "
                       "the change", expression="DirectoryEntry/@version")


def _apply_entries(session: Session, caller: Caller, pending: list[Pending],
                   detail: str) -> dict[int, Any]:
    """Apply a batch of entries (``ImportKind.apply``)."""
    return EntryBatch(session, caller, detail).apply(pending)


ENTRY_KIND: Final = ImportKind("directory entries", lambda data: str(data["contactpoint_id"]),
                               _apply_entries, lambda data: data.get("contactpoint_id"))
