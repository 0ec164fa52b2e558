"""What a create or update tells its writer: the notes (what was not kept, what was changed,
that nothing changed) and the answer's shape by ``Prefer: return=`` (FHIR R4
http.html#ins-return): the resource by default, an empty body with ``minimal``, the notes
with ``OperationOutcome``; in a transaction or batch response each entry's
``response.outcome`` carries them (http.html#transaction-response).

Notes name elements as FHIRPath and never repeat a value the writer sent, except codes of a
closed vocabulary (a status, a MIME type), which say nothing of a person or a secret."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any, Final, Literal

from sqlalchemy.orm import Session

from adapter.errors import issue
from adapter.fhir.handlers import ResourceHandler, WriteResult
from adapter.security.caller import Caller

Preference = Literal["minimal", "representation", "OperationOutcome"]
# RFC 7240 section 2: preference names and tokens compare case-insensitively.
RETURN_VALUES: Final[dict[str, Preference]] = {
    "minimal": "minimal", "representation": "representation",
    "operationoutcome": "OperationOutcome"}
# The notes that say what became of the write (any other issue is about the resource).
SAYS_WHAT_WAS_KEPT: Final = ("Not kept:", "Changed:", "No change:", "Not created:")


def asked_preference(values: Iterable[str]) -> Preference | None:
    """Return the ``return`` preference of the request's ``Prefer`` headers (RFC 7240): the
    first one this server knows, else None (an unknown one is ignored, as RFC 7240 section 2
    asks)."""
    for value in values:
        for preference in value.split(","):
            name, _, token = preference.split(";")[0].partition("=")
            if name.strip().lower() == "return":
                known = RETURN_VALUES.get(token.strip().strip('"').lower())
                if known:
                    return known
    return None


def applied_preference(values: Iterable[str], result: WriteResult) -> Preference:
    """Return the ``return`` preference applied to ``result``: the one asked for (by default
    ``representation``), except that a resource carrying what is shown only once is always
    returned."""
    asked = asked_preference(values)
    return "representation" if result.shown_once or asked is None else asked


def preference_applied(values: Iterable[str], result: WriteResult) -> dict[str, str]:
    """Return the ``Preference-Applied`` header (RFC 7240 section 3) when a ``return``
    preference was asked for: the one applied."""
    if asked_preference(values) is None:
        return {}
    return {"Preference-Applied": f"return={applied_preference(values, result)}"}


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


def matched_answer(handler: ResourceHandler, session: Session, resource_id: str,
                   who: Caller) -> WriteResult:
    """Return the answer of a conditional create that found ``resource_id`` (by its condition,
    or by the directory's own rule of one live entry per NHS number): the resource as ``who``
    may see it, with the note that nothing was created (FHIR R4 http.html#ccreate)."""
    rendered = handler.read(session, resource_id, who)
    rendered.issues.append(matched(handler.resource_type, resource_id))
    return WriteResult(rendered, False, False, matched=True)


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


# --- what a resource kept of what was sent, element by element ----------------------------

# Elements the server sets itself (FHIR R4 resource.html#Meta): sent values are not notes.
SERVER_SET: Final = frozenset({"meta.versionId", "meta.lastUpdated", "meta.source"})


def differences(resource_type: str, sent: dict[str, Any], written: dict[str, Any],
                why: dict[str, str], codes: frozenset[str],
                server_set: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Return the notes of what ``written`` (the resource as kept) does not carry of ``sent``
    (as the writer sent it): each element absent is "Not kept", each value kept otherwise is
    "Changed" (with the values only for the element paths in ``codes``, dotted without
    indexes: ``channel.payload``), with the reason ``why`` gives for that path (``""``: for
    any other).

    Extensions are matched by ``url``, repeated primitives by value, other lists by
    position; instants compare as moments (``2027-01-01T00:00:00Z`` is
    ``2027-01-01T00:00:00.000+00:00``). Elements the server sets (``meta.versionId``, ...,
    and the plain paths ``server_set``) are not compared."""
    notes: list[dict[str, Any]] = []
    _compare(sent, written, (resource_type, ""), notes, why, codes, SERVER_SET | server_set)
    return notes


def _compare(sent: Any, written: Any, where: tuple[str, str], notes: list[dict[str, Any]],
             why: dict[str, str], codes: frozenset[str], skip: frozenset[str]) -> None:
    """Append the notes of ``sent`` against ``written`` at ``where`` (FHIRPath, plain path)."""
    path, plain = where
    if isinstance(sent, dict) and isinstance(written, dict):
        for key, value in sent.items():
            inner = f"{plain}.{key.lstrip('_')}".lstrip(".")
            if key in ("resourceType", "id") and not plain or inner in skip:
                continue
            at = (f"{path}.{key.lstrip('_')}", inner)
            if key not in written and isinstance(value, list):
                _compare_list(value, [], at, notes, why, codes, skip)  # each item named
            elif key not in written:
                notes.append(not_kept(at[0], why.get(inner) or why.get("")))
            else:
                _compare(value, written[key], at, notes, why, codes, skip)
    elif isinstance(sent, list) and isinstance(written, list):
        _compare_list(sent, written, where, notes, why, codes, skip)
    elif not _equal(sent, written):
        shown = plain in codes and not isinstance(sent, dict | list)
        notes.append(changed(path, why.get(plain) or why.get("") or "kept as another value",
                             _text(sent) if shown else None,
                             _text(written) if shown else None))


def _compare_list(sent: list[Any], written: list[Any], where: tuple[str, str],
                  notes: list[dict[str, Any]], why: dict[str, str], codes: frozenset[str],
                  skip: frozenset[str]) -> None:
    """Append the notes of a list: extensions by url, primitives by value, else by position."""
    path, plain = where
    unused = list(written)
    for index, item in enumerate(sent):
        at = f"{path}[{index}]"
        if isinstance(item, dict) and "url" in item:
            match = next((w for w in unused if isinstance(w, dict)
                          and w.get("url") == item["url"]), None)
        elif not isinstance(item, dict | list):
            match = next((w for w in unused if _equal(item, w)), None)
        else:
            match = unused[0] if unused else None
        if match is None:
            notes.append(not_kept(at, why.get(plain) or _extension_why(item) or why.get("")))
            continue
        unused.remove(match)
        _compare(item, match, (at, plain), notes, why, codes, skip)


def _text(value: Any) -> str:
    """Return a primitive as FHIR JSON writes it (``true``, not Python's ``True``)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _extension_why(element: Any) -> str | None:
    """Return what an extension not kept is (its url: a definition, never a value)."""
    if isinstance(element, dict) and isinstance(element.get("url"), str):
        return f"extension {element['url']}"
    return None


def _equal(sent: Any, written: Any) -> bool:
    """Return True when two primitives are the same value (instants as moments)."""
    if sent == written:
        return True
    if isinstance(sent, str) and isinstance(written, str) and "T" in sent and "T" in written:
        try:
            return _moment(sent) == _moment(written)
        except ValueError:
            return False
    return False


def _moment(text: str) -> dt.datetime:
    """Return a FHIR instant or dateTime as an aware datetime.

    :raises ValueError: not one.
    """
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# Elements a type's mapping reads but the directory decides otherwise (by plain path, with
# why), compared after every write of that type; codes are shown. The types whose handlers
# compare their own (CareTeam, Subscription, Task) are not listed.
DECIDED: Final[dict[str, dict[str, str]]] = {
    "Patient": {"active": "a child's entry is active while its record status (extension "
                          "RecordStatus) is live; that extension decides, and archives it"},
}


def decided_changes(sent: dict[str, Any], result: WriteResult) -> list[dict[str, Any]]:
    """Return the "Changed:" notes of elements of ``sent`` that the directory decides (see
    ``DECIDED``), compared with the resource written."""
    written = result.rendered.resource
    why = DECIDED.get(str(written.get("resourceType")))
    if not why or result.matched:
        return []
    pick = [key for key in why if key in sent and key in written]
    return differences(str(written["resourceType"]), {k: sent[k] for k in pick},
                       {k: written[k] for k in pick}, why, frozenset(why))
