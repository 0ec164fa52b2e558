"""What a create or update tells its writer: the notes (what was not kept, what was changed,
that nothing changed) and the answer's shape by ``Prefer: return=`` (FHIR R4
http.html#ins-return): the resource by default, an empty body with ``minimal``, the notes
with ``OperationOutcome``; in a transaction or batch response each entry's
``response.outcome`` carries them (http.html#transaction-response).

Notes name elements as FHIRPath and never repeat a value the writer sent, except codes of a
closed vocabulary (a status, a MIME type), which say nothing of a person or a secret."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal

from adapter.errors import issue
from adapter.fhir.handlers import WriteResult

Preference = Literal["minimal", "representation", "OperationOutcome"]
# RFC 7240 section 2: preference names and tokens compare case-insensitively.
RETURN_VALUES: Final[dict[str, Preference]] = {
    "minimal": "minimal", "representation": "representation",
    "operationoutcome": "OperationOutcome"}
# The notes that say what became of the write (any other issue is about the resource).
SAYS_WHAT_WAS_KEPT: Final = ("Not kept:", "Changed:", "No change:", "Not created:")


def return_preference(values: Iterable[str]) -> Preference:
    """Return the ``return`` preference of the request's ``Prefer`` headers (RFC 7240): the
    first one this server knows, else ``representation`` (an unknown one is ignored, as RFC
    7240 section 2 asks)."""
    for value in values:
        for preference in value.split(","):
            name, _, token = preference.split(";")[0].partition("=")
            if name.strip().lower() == "return":
                known = RETURN_VALUES.get(token.strip().strip('"').lower())
                if known:
                    return known
    return "representation"


def not_kept(path: str, why: str | None = None) -> dict[str, Any]:
    """Return the note of an inbound element the directory does not keep."""
    return issue("information", "informational",
                 f"Not kept: {path}" + (f" ({why})." if why else "."), path)


def changed(path: str, why: str, before: str | None = None,
            after: str | None = None) -> dict[str, Any]:
    """Return the note of an inbound element kept with another value: ``before`` and
    ``after`` only for codes (never a person's data or a secret)."""
    values = f" from '{before}' to '{after}'" if before is not None and after is not None \
        else ""
    return issue("information", "informational", f"Changed: {path}{values}: {why}.", path)


def no_change(resource_type: str, resource_id: str, version: int) -> dict[str, Any]:
    """Return the note of an update that changes nothing the directory keeps."""
    return issue("information", "informational",
                 f"No change: {resource_type}/{resource_id} already holds everything this "
                 f"write says that the directory keeps; it stays at version {version}.")


def matched(resource_type: str, resource_id: str) -> dict[str, Any]:
    """Return the note of a conditional create whose condition found the resource."""
    return issue("information", "informational",
                 f"Not created: {resource_type}/{resource_id} matches the If-None-Exist "
                 "condition (FHIR R4 http.html#ccreate); it is returned unchanged.")


def all_kept(resource_type: str, resource_id: str, version: int,
             created: bool) -> dict[str, Any]:
    """Return the note of a write that kept everything it said."""
    done = "Created" if created else "Updated"
    return issue("information", "informational",
                 f"{done} {resource_type}/{resource_id} (version {version}): everything "
                 "this write says is kept.")


def notes_of(result: WriteResult) -> list[dict[str, Any]]:
    """Return the notes of a write: its issues, and "No change" when it changed nothing."""
    rendered = result.rendered
    notes = list(rendered.issues)
    if not result.created and not result.changed and not result.matched:
        resource = rendered.resource
        notes.append(no_change(resource["resourceType"], resource["id"], rendered.version))
    return notes


def outcome_issues(result: WriteResult) -> list[dict[str, Any]]:
    """Return the issues of ``Prefer: return=OperationOutcome``: the notes, else a note that
    everything was kept (an OperationOutcome has at least one issue)."""
    notes = notes_of(result)
    if any(n["diagnostics"].startswith(SAYS_WHAT_WAS_KEPT) for n in notes):
        return notes
    resource = result.rendered.resource
    return [*notes, all_kept(resource["resourceType"], resource["id"], result.rendered.version,
                             result.created)]
