"""Importing FHIR resources from files (the ``import`` command): a ``transaction`` or ``batch``
Bundle is applied exactly as ``POST /fhir`` applies it (``adapter.fhir.transaction``); the
resources of any other Bundle and of NDJSON files (a bulk export's) are applied one by one
through the same REST handlers, each an idempotent ``PUT [type]/[id]`` (FHIR R4
http.html#update: ids derive from natural keys, so a re-import changes nothing) or a create
when it has no id, each in its own savepoint, in transactions of ``CHUNK`` resources.

NDJSON files are taken in the order the references need: Organization, Practitioner, Patient,
CareTeam. A bulk export writes the PractitionerRoles of a CareTeam's participants to their own
file, while a CareTeam write takes the roles of new participants contained (``#id``): the
roles are indexed by id in a temporary SQLite file (memory stays flat) and contained into the
CareTeams that refer to them.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from adapter.db import get_db
from adapter.errors import BadRequest, GatewayError, NotFound
from adapter.fhir.announce import notes_of
from adapter.fhir.body import parse_json_resource
from adapter.fhir.handlers import ResourceHandler
from adapter.fhir.transaction import Entry, run_batch, run_transaction
from adapter.imports.directory import CONFLICT, DB_ERRORS, ImportOutcome
from adapter.registry import import_order
from adapter.security import audit
from adapter.security.access import require_scope
from adapter.security.caller import Caller
from adapter.store.statistics import analyzed_after

# The order in which NDJSON resources are applied: each after what it refers to
# (adapter/registry.py).
TYPE_ORDER: Final = import_order()
# Resources applied through another one, or reports rather than data.
CONTAINED_TYPES: Final = frozenset({"PractitionerRole"})
SKIPPED_TYPES: Final = frozenset({"OperationOutcome"})
CHUNK: Final = 200


@dataclass(frozen=True)
class Line:
    """One resource of an NDJSON file (or a Bundle entry) with where it was found."""

    position: int
    line: int | None
    resource: dict[str, Any]


def handlers() -> dict[str, ResourceHandler]:
    """Return the registered REST handlers by resource type."""
    from adapter.fhir.api import current_providers

    return current_providers()


def _status(created: bool, changed: bool) -> str:
    """Return the import status of a write."""
    return "created" if created else "updated" if changed else "unchanged"


def reported_notes(issues: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """Return the notes of a write the import reports: what was not kept or was changed and
    any other note on the resource, not "No change" (the status says it)."""
    return tuple(str(i.get("diagnostics")) for i in issues
                 if i.get("diagnostics") and not str(i["diagnostics"]).startswith("No change:"))


def apply_resource(handler: ResourceHandler, session: Any, resource: dict[str, Any],
                   caller: Caller) -> tuple[str, tuple[str, ...]]:
    """Apply one resource through its handler: PUT by id, or create without one; return the
    import status and the write's notes (as the REST answer gives them).

    :raises GatewayError: the handler or the caller's scopes refuse it.
    """
    resource_id = resource.get("id")
    if isinstance(resource_id, str) and resource_id:
        require_scope(caller, handler.resource_type, "update")
        result = handler.update(session, resource_id, resource, caller, None)
    else:
        require_scope(caller, handler.resource_type, "create")
        result = handler.create(session, resource, caller)
    return _status(result.created, result.changed), reported_notes(notes_of(result))


def _outcome(item: Line, status: str, error: GatewayError | None = None,
             notes: tuple[str, ...] = ()) -> ImportOutcome:
    """Return the outcome of one resource."""
    if error is None:
        return ImportOutcome(item.position, item.line, status, notes=notes)
    return ImportOutcome(item.position, item.line, "rejected", reason=error.message,
                         expression=error.expression)


def apply_resources(items: Iterable[Line], caller: Caller) -> Iterator[ImportOutcome]:
    """Apply resources one by one, in transactions of ``CHUNK``; yield each one's outcome."""
    known = handlers()
    chunk: list[Line] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= CHUNK:
            yield from _apply_chunk(chunk, known, caller)
            chunk = []
    if chunk:
        yield from _apply_chunk(chunk, known, caller)


def _apply_chunk(chunk: list[Line], known: dict[str, ResourceHandler],
                 caller: Caller) -> list[ImportOutcome]:
    """Apply a chunk of resources in one transaction, each in its own savepoint."""
    outcomes = []
    with get_db().write_transaction() as session:
        for item in chunk:
            handler = known.get(str(item.resource.get("resourceType")))
            try:
                if handler is None:
                    raise NotFound(f"{item.resource.get('resourceType')} is not a resource "
                                   "type this server writes")
                with session.begin_nested():
                    status, notes = apply_resource(handler, session, item.resource, caller)
                    session.flush()
                outcomes.append(_outcome(item, status, notes=notes))
            except GatewayError as error:
                audit.record_duplicate(session, error, caller=caller)
                outcomes.append(_outcome(item, "rejected", error))
            except DB_ERRORS:
                outcomes.append(_outcome(item, "rejected", GatewayError(CONFLICT)))
    return outcomes


# --- Bundles ----------------------------------------------------------------------------

def _response_outcome(index: int, response: dict[str, Any]) -> ImportOutcome:
    """Return the outcome of one transaction/batch response entry."""
    status = str(response.get("response", {}).get("status", ""))
    if status.startswith("2"):
        notes = response.get("response", {}).get("outcome", {}).get("issue") or []
        unchanged = any(str(n.get("diagnostics", "")).startswith("No change:") for n in notes)
        kind = "created" if status.startswith("201") else "unchanged" if unchanged \
            else "updated"
        return ImportOutcome(index + 1, None, kind, notes=reported_notes(notes))
    issues = response.get("response", {}).get("outcome", {}).get("issue") or [{}]
    return ImportOutcome(index + 1, None, "rejected", reason=issues[0].get("diagnostics"),
                         expression=(issues[0].get("expression") or [None])[0])


def _bundle_entries(bundle: dict[str, Any]) -> list[Entry]:
    """Return the request entries of a transaction or batch Bundle.

    :raises BadRequest: an entry without a usable request.
    """
    from adapter.fhir.transaction import _entries

    return _entries(bundle)


def _apply_transaction(bundle: dict[str, Any]) -> Iterator[ImportOutcome]:
    """Apply a transaction Bundle all or nothing; yield its entries' outcomes, or one
    rejection when nothing was applied.

    :raises BadRequest: an entry without a usable request.
    """
    entries = _bundle_entries(bundle)
    error: GatewayError | None = None
    try:
        responses = run_transaction(entries, handlers())
    except DB_ERRORS:
        error = GatewayError(CONFLICT)
    except GatewayError as refused:
        error = refused
    if error is not None:
        yield ImportOutcome(1, None, "rejected", reason=f"{error.message} (the transaction "
                            "is all or nothing: nothing was applied)",
                            expression=error.expression)
        return
    yield from (_response_outcome(i, r) for i, r in enumerate(responses))


def apply_bundle(bundle: dict[str, Any], caller: Caller) -> Iterator[ImportOutcome]:
    """Apply a Bundle: a transaction all or nothing and a batch entry by entry (as
    ``POST /fhir``), the resources of any other Bundle one by one; yield outcomes.

    :raises BadRequest: not a Bundle, or a transaction/batch entry without a request.
    """
    yield from analyzed_after(get_db(), _bundle_outcomes(bundle, caller))


def _bundle_outcomes(bundle: dict[str, Any], caller: Caller) -> Iterator[ImportOutcome]:
    """Apply a Bundle as ``apply_bundle`` says; yield outcomes."""
    if bundle.get("resourceType") != "Bundle":
        raise BadRequest("not a FHIR Bundle")
    kind = bundle.get("type")
    if kind == "transaction":
        yield from _apply_transaction(bundle)
    elif kind == "batch":
        yield from (_response_outcome(i, r) for i, r in
                    enumerate(run_batch(_bundle_entries(bundle), handlers())))
    else:
        resources = [Line(i + 1, None, entry["resource"]) for i, entry in
                     enumerate(bundle.get("entry") or [])
                     if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)]
        yield from apply_resources(_ordered_in_memory(resources), caller)


def _ordered_in_memory(resources: list[Line]) -> list[Line]:
    """Return a Bundle's resources in the order references need (stable within a type)."""
    rank = {name: i for i, name in enumerate(TYPE_ORDER)}
    return sorted(resources, key=lambda item: rank.get(str(item.resource.get("resourceType")),
                                                       len(rank)))


# --- NDJSON -----------------------------------------------------------------------------

class RoleIndex:
    """PractitionerRole resources by id, in a temporary SQLite file (not in memory)."""

    def __init__(self, folder: str) -> None:
        self.connection = sqlite3.connect(str(Path(folder) / "roles.db"))
        self.connection.execute("CREATE TABLE role (id TEXT PRIMARY KEY, body BLOB)")
        self.count = 0

    def add(self, resource_id: str, body: bytes) -> None:
        """Keep one role's JSON (a later line with the same id replaces it)."""
        self.connection.execute("INSERT OR REPLACE INTO role VALUES (?, ?)", (resource_id, body))
        self.count += 1

    def get(self, resource_id: str) -> dict[str, Any] | None:
        """Return the role with this id, or None."""
        row = self.connection.execute("SELECT body FROM role WHERE id = ?",
                                      (resource_id,)).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def contain(self, careteam: dict[str, Any]) -> dict[str, Any]:
        """Return a CareTeam with the indexed roles its participants refer to contained."""
        contained = list(careteam.get("contained") or [])
        participants = []
        for participant in careteam.get("participant") or []:
            reference = str((participant.get("member") or {}).get("reference", ""))
            role = self.get(reference.split("/", 1)[1]) \
                if reference.startswith("PractitionerRole/") else None
            if role is not None:
                contained.append(role)
                participant = {**participant, "member": {"reference": f"#{role['id']}"}}
            participants.append(participant)
        if not contained:
            return careteam
        return {**careteam, "contained": contained, "participant": participants}

    def close(self) -> None:
        """Close the index (its file goes with the temporary folder)."""
        self.connection.close()


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield the non-empty lines of an NDJSON file with their numbers."""
    with open(path, "rb") as stream:
        for number, text in enumerate(stream, start=1):
            if text.strip():
                yield number, text


def _resources_of(paths: list[Path], wanted: str | None, rejected: list[ImportOutcome],
                  ) -> Iterator[Line]:
    """Yield the resources of type ``wanted`` (None: of a type not in ``TYPE_ORDER``) of the
    files; on that first pass (None), unreadable lines are added to ``rejected``."""
    position = 0
    for path in paths:
        for number, text in _lines(path):
            position += 1
            try:
                resource = parse_json_resource(text, "The line")
            except BadRequest as error:
                if wanted is None:
                    rejected.append(ImportOutcome(position, number, "rejected",
                                                  reason=error.message,
                                                  expression=error.expression))
                continue
            kind = resource["resourceType"]
            if kind == wanted or (wanted is None and kind not in TYPE_ORDER):
                yield Line(position, number, resource)


def apply_ndjson(paths: list[Path], caller: Caller) -> Iterator[ImportOutcome]:
    """Apply the resources of NDJSON files in reference order; yield their outcomes (the
    position counts lines over the files in the order given); a large import refreshes the
    planner's statistics at its end (``analyzed_after``)."""
    yield from analyzed_after(get_db(), _ndjson_outcomes(paths, caller))


def _ndjson_outcomes(paths: list[Path], caller: Caller) -> Iterator[ImportOutcome]:
    """Apply the resources of NDJSON files as ``apply_ndjson`` says; yield their outcomes."""
    with tempfile.TemporaryDirectory() as folder:
        roles = RoleIndex(folder)
        try:
            rejected: list[ImportOutcome] = []
            for item in _resources_of(paths, None, rejected):
                kind = item.resource["resourceType"]
                if kind in CONTAINED_TYPES and isinstance(item.resource.get("id"), str):
                    roles.add(item.resource["id"], orjson.dumps(item.resource))
                elif kind not in SKIPPED_TYPES:
                    yield from apply_resources([item], caller)
            for kind in TYPE_ORDER:
                items = _resources_of(paths, kind, [])
                if kind == "CareTeam":
                    items = (Line(i.position, i.line, roles.contain(i.resource)) for i in items)
                yield from apply_resources(items, caller)
            yield from rejected
        finally:
            roles.close()
