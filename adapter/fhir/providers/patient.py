"""The provider of ``Patient``: a child's directory entry (stored by ``adapter.store.children``),
its search (``adapter.fhir.patient_search``) and how one is rendered for a caller.

A read, the current version's vread and a search page load the entries as light records
(``adapter.store.rows``, SQLAlchemy Core: no ORM object is hydrated) and the disclosure policy
redacts those records while the Patient is built; a write and the earlier versions keep the ORM
records.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapter.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    issue,
)
from adapter.fhir import references
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.patient_search import PATIENT_PARAMS, patient_select, selected
from adapter.fhir.search import SearchParam, SearchRequest, decode_cursor, encode_cursor
from adapter.fhir.validation import require_valid, validate_stored
from adapter.mapping import fhir as mapping
from adapter.models import Child
from adapter.models.rows import ChildRow
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import disclose_child
from adapter.settings import Settings
from adapter.store import history
from adapter.store.children import (
    BREAK_GLASS,
    child_query,
    children_statement,
    complete_record,
    entry_write,
    load_child,
    load_entry,
    require_entry_rules,
    require_own_authority,
)
from adapter.store.entry_rules import require_within_age_rules
from adapter.store.organisations import write_errors
from adapter.store.records import apply_child
from adapter.store.rows import entries_rows


def render_patient(session: Session, child: Child | ChildRow, caller: Caller,
                   action: str | None, base: str, current: Child | None = None) -> Rendered:
    """Disclose, audit (as ``action``; None when the write's own record covers it) and map
    one child for ``caller`` under the canonical ``base``; ``current`` is the entry now when
    ``child`` is an earlier version (judged by both, docs/domain.md "Shielding")."""
    disclosure = disclose_child(child, caller, current)
    if action is not None:
        audit.record(session, action, resource_type="Patient", resource_id=child.resource_id,
                     child_ref=child.resource_id, override=disclosure.override, caller=caller)
        ledger.record_delivery(session, caller, child, action)
    resource = mapping.child_to_patient(disclosure.child, redacted=disclosure.redacted, base=base)
    issues = [issue("warning", "suppressed", BREAK_GLASS)] if disclosure.override else []
    return Rendered(resource, child.version, child.last_updated, issues)


def patient_record(session: Session, resource: dict[str, Any], caller: Caller,
                   existing: Child | None,
                   settings: Settings) -> tuple[Child, list[dict[str, Any]]]:
    """Validate and map a Patient to a transient Child, completed from what is stored
    (``adapter.store.children.complete_record``: involvements other than the GP, other
    organisations' local ids). Returns the child and the validation's warnings and
    information (what was not kept).

    :raises Invalid: not a valid Patient.
    """
    notes = require_valid("Patient", resource, settings)
    references.require_resolved(session, "Patient", resource, caller, settings)
    record, _ignored = mapping.patient_to_child(resource, base=settings.canonical_base)
    return record, [*notes, *complete_record(session, record, caller, existing)]


class PatientProvider:
    """The REST handler of ``Patient``."""

    resource_type: ClassVar[str] = "Patient"
    interactions: ClassVar[tuple[str, ...]] = (
        "read", "vread", "history-instance", "search-type", "search-type-post", "create",
        "update", "conditional-update", "validate")
    search_params: ClassVar[dict[str, SearchParam]] = PATIENT_PARAMS
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset({"CareTeam:subject"})
    profile: ClassVar[str | None] = "Patient"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.canonical_base

    def _render(self, session: Session, child: Child | ChildRow, caller: Caller,
                action: str | None, current: Child | None = None) -> Rendered:
        """Return ``child`` rendered for ``caller`` (``render_patient``) under this base."""
        return render_patient(session, child, caller, action, self.base, current)

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return the current Patient as ``caller`` may see it (from light records)."""
        return self._render(session, load_entry(session, resource_id, caller), caller, "read")

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return one version of a Patient: the current one from light records, an earlier
        one from its snapshot, judged by the current entry too.

        :raises NotFound: no such version.
        """
        entry = load_entry(session, resource_id, caller)
        if version == entry.version:
            return self._render(session, entry, caller, "vread")
        current = load_child(session, resource_id, caller)
        for stored in history.child_versions(session, resource_id):
            if stored.version == version and not stored.deleted:
                return self._render(session, history.child_from_snapshot(stored), caller,
                                    "vread", current)
        raise NotFound(f"Patient/{resource_id} has no version {version}.")

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return every version of a Patient, newest first."""
        current = load_child(session, resource_id, caller)
        out: list[tuple[Rendered | None, int, str, dt.datetime]] = [(
            self._render(session, current, caller, "history"), current.version,
            "POST" if current.version == 1 else "PUT", current.last_updated)]
        for stored in history.child_versions(session, resource_id):
            rendered = self._render(session, history.child_from_snapshot(stored), caller,
                                    "history", current)
            out.append((rendered, stored.version, "POST" if stored.version == 1 else "PUT",
                        stored.last_updated))
        return out

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of Patients (keyset paging on the internal id)."""
        after = None
        if search.cursor:
            last = decode_cursor(search.cursor, 1)[0]
            if not last.isdigit():
                raise BadRequest("_cursor is not a paging cursor of this search: follow the "
                                 "Bundle's next link.", expression="_cursor")
            after = int(last)
        query = patient_select(search, caller, self.base, after).order_by(Child.id)
        # The page's ids first (the search's own conditions), then its children in one joined
        # SELECT: two statements whatever the page size, instead of one per loaded list.
        ids = list(dict.fromkeys(selected(session, query.limit(search.count + 1))))
        more = len(ids) > search.count
        entries = entries_rows(session, ids[:search.count])
        matches = [self._render(session, e, caller, "search").resource for e in entries]
        included = self._revincluded(session, ids[:search.count], caller) \
            if search.revincludes else []
        cursor = encode_cursor(entries[-1].id) if more and entries else None
        return Page(matches, included, cursor)

    def _revincluded(self, session: Session, ids: list[int],
                     caller: Caller) -> list[dict[str, Any]]:
        """Return the CareTeams whose subject is one of the children with internal ids
        ``ids`` (``_revinclude``; the CareTeams are rendered from ORM records)."""
        from adapter.fhir.careteams import careteams_of

        children = list(session.scalars(children_statement(), {"ids": ids}).unique()) \
            if ids else []
        return [r for child in children for r in careteams_of(session, child, caller, self.base)]

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many Patients match (no audit: no child's data is disclosed)."""
        query = patient_select(search, caller, self.base).with_only_columns(func.count(Child.id))
        return int(selected(session, query.order_by(None))[0] or 0)

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Create an entry from a Patient (allocating a ContactPoint ID when it has none).

        :raises Conflict: an entry with that ContactPoint ID exists.
        """
        record, ignored = patient_record(session, resource, caller, None, self.settings)
        require_own_authority(record.managing_organisation, caller)
        if session.scalar(select(Child.id).where(
                Child.contactpoint_id == record.contactpoint_id)) is not None:
            raise Conflict("An entry with this ContactPoint ID exists: update it with PUT.",
                           expression="Patient.identifier")
        require_entry_rules(session, record, None, caller)
        with entry_write(session, record, caller):
            child, _outcome = apply_child(session, record, None)
        return self._saved(session, child, caller, "create", ignored, created=True)

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Update an entry from a Patient (``If-Match`` guards against lost updates).

        :raises PreconditionFailed: ``If-Match`` names an older version.
        :raises Invalid: the body's id differs from the URL's.
        """
        if resource.get("id") not in (None, resource_id):
            raise Invalid("The Patient's id must match the id in the URL.",
                          expression="Patient.id")
        existing = session.scalar(child_query().where(Child.resource_id == resource_id))
        if existing is None:
            return self._create_at(session, resource_id, resource, caller)
        self._check_writable(existing, caller, if_match)
        record, ignored = patient_record(session, resource, caller, existing, self.settings)
        if record.contactpoint_id != existing.contactpoint_id:
            raise Invalid("The ContactPoint ID of an entry cannot change.",
                          expression="Patient.identifier")
        require_own_authority(record.managing_organisation, caller)
        require_entry_rules(session, record, existing, caller)
        before = history.child_snapshot(existing)
        # Flushed here, the version check first: a concurrent writer gets 412, not 409.
        with entry_write(session, record, caller):
            child, outcome = apply_child(session, record, existing)
        if outcome != "unchanged":
            session.add(before)  # the superseded version, stored once this update has won
        return self._saved(session, child, caller, "update", ignored, created=False,
                           changed=outcome != "unchanged")

    def _create_at(self, session: Session, resource_id: str, resource: dict[str, Any],
                   caller: Caller) -> WriteResult:
        """Create through PUT: only at the id this server derives from the ContactPoint ID.

        :raises Invalid: another id.
        """
        result = self.create(session, resource, caller)
        if result.rendered.resource["id"] != resource_id:
            raise Invalid("A new Patient can be created by PUT only at the id derived from its "
                          "ContactPoint ID; use POST instead.", expression="Patient.id")
        return result

    def _check_writable(self, existing: Child, caller: Caller, if_match: int | None) -> None:
        """Check version, ownership and shielding before an update.

        :raises PreconditionFailed: stale ``If-Match``.
        :raises Forbidden: another authority's entry, or shielded without the right.
        """
        if if_match is not None and if_match != existing.version:
            raise PreconditionFailed(f"If-Match names version {if_match}, the current version is "
                                     f"{existing.version}: read it again and re-apply.")
        require_own_authority(existing.managing_organisation, caller)
        if existing.shielded and not caller.has_right("shielded"):
            raise Forbidden("Updating a shielded entry needs the shielding right (part of it "
                            "is withheld from you).", expression="Patient")

    def _saved(self, session: Session, child: Child, caller: Caller, action: str,
               notes: list[dict[str, Any]], *, created: bool,
               changed: bool = True) -> WriteResult:
        """Flush (with the snapshot of the superseded version), audit and render a written
        entry.

        :raises PreconditionFailed: a concurrent update won (optimistic lock).
        :raises Conflict: a unique key was taken meanwhile.
        :raises Invalid: a value the database cannot hold.
        """
        with write_errors("entry"):
            session.flush()
        audit.record(session, action if changed else "update-unchanged", resource_type="Patient",
                     resource_id=child.resource_id, child_ref=child.resource_id, caller=caller)
        # The answer carries the whole entry as the writer may see it (other organisations'
        # involvements too): the writer now holds it and is in scope of the purge.
        ledger.record_delivery(session, caller, child, "write")
        rendered = self._render(session, child, caller, None)
        rendered.issues = notes + rendered.issues
        return WriteResult(rendered, created, changed)

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Entries are not deleted by callers: they are archived by the retention rules.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("A directory entry is not deleted: it is archived when its "
                               "retention ends (docs/domain.md 'Retention').")

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Return the issues a create of ``resource`` would meet (nothing is stored): its
        shape, the profiles, the mapping, its references against what is stored and the
        directory's age rules (the rules that need the caller's write itself, such as one
        live entry per NHS number, are met at the write)."""
        issues = validate_stored("Patient", resource, caller, self.settings)
        if any(i["severity"] in ("error", "fatal") for i in issues):
            return issues
        record, _ignored = mapping.patient_to_child(resource, base=self.base)
        if (record.record_status or "live") == "live":
            try:
                require_within_age_rules(record.birth_date, record.death_date,
                                         record.extended_retention, "Patient.birthDate",
                                         "Patient.deceasedDateTime")
            except Invalid as refused:
                issues.append(issue("error", refused.issue_code, refused.message,
                                    refused.expression))
        return issues
