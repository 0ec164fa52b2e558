"""Bundles this server returns: search sets, histories and transaction/batch responses,
with absolute URLs everywhere (FHIR R4 bundle.html, http.html#search)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlencode

from flask import request

# fhir_base lives with public_base, where the error handlers (a layer below) use it too.
from adapter.http import fhir_base as fhir_base
from adapter.wellformed import Unrenderable, require_renderable

SUBSETTED: Final = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                    "code": "SUBSETTED", "display": "subsetted"}
MANDATORY_ELEMENTS: Final = frozenset({"resourceType", "id", "meta"})


def full_url(resource: dict[str, Any], base: str | None = None) -> str:
    """Return the absolute URL of a resource (under the FHIR ``base``, default this
    request's)."""
    return f"{base or fhir_base()}/{resource['resourceType']}/{resource['id']}"


def now_instant() -> str:
    """Return the current time as a FHIR instant."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def page_links(resource_type: str, next_cursor: str | None,
               ignored: Iterable[str] = ()) -> list[dict[str, str]]:
    """Return the ``self`` and ``next`` links: self shows only the parameters applied.

    The search's URL and its applied parameters are encoded once for both links: a pair's
    encoding does not depend on its neighbours, so ``urlencode`` of ``applied`` then the
    cursor is the two encodings joined by ``&``."""
    dropped = set(ignored)
    applied = urlencode([(k, v) for k, v in request.args.items(multi=True)
                         if k not in dropped and f"{k}={v}" not in dropped and k != "_cursor"])
    url = f"{fhir_base()}/{resource_type}"
    links = [{"relation": "self", "url": _with_query(url, applied, request.args.get("_cursor"))}]
    if next_cursor:
        links.append({"relation": "next", "url": _with_query(url, applied, next_cursor)})
    return links


def _with_query(url: str, applied: str, cursor: str | None) -> str:
    """Return ``url`` with the encoded ``applied`` parameters and then ``cursor`` (if any) as
    ``_cursor``."""
    query = "&".join(part for part in (applied, urlencode([("_cursor", cursor)]) if cursor
                                       else "") if part)
    return f"{url}?{query}" if query else url


def apply_elements(resource: dict[str, Any], elements: list[str] | None) -> dict[str, Any]:
    """Keep only the requested top-level elements (``_elements``), marked SUBSETTED."""
    if not elements:
        return resource
    kept = {k: v for k, v in resource.items() if k in MANDATORY_ELEMENTS or k in elements}
    meta = dict(kept.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def searchset(resource_type: str, matches: list[dict[str, Any]],
              included: list[dict[str, Any]], next_cursor: str | None,
              ignored: list[str], elements: list[str] | None = None,
              total: int | None = None) -> dict[str, Any]:
    """Return a search-set Bundle of ``matches`` and ``included`` resources; one that cannot
    be rendered is left out and named in an outcome entry (the others are still served)."""
    withheld: list[Unrenderable] = []
    base = fhir_base()  # the same for every entry
    entries = [_entry(base, r, "match")
               for r in renderable([apply_elements(r, elements) for r in matches], withheld)]
    entries += [_entry(base, r, "include") for r in renderable(included, withheld)]
    if ignored:
        entries.append({"resource": ignored_outcome(ignored), "search": {"mode": "outcome"}})
    if withheld:
        entries.append({"resource": withheld_outcome(withheld), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                              "meta": {"lastUpdated": now_instant()}, "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = page_links(resource_type, next_cursor, ignored)
    if entries:
        bundle["entry"] = entries
    return bundle


def _entry(base: str, resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """Return the search-set entry of ``resource`` (its ``fullUrl`` under the FHIR
    ``base``)."""
    return {"fullUrl": full_url(resource, base), "resource": resource, "search": {"mode": mode}}


def renderable(resources: list[dict[str, Any]],
               withheld: list[Unrenderable]) -> list[dict[str, Any]]:
    """Return the resources that can be rendered; add the error of each other to
    ``withheld`` (``require_renderable`` has logged its id for the operators)."""
    kept = []
    for resource in resources:
        try:
            require_renderable(resource)
        except Unrenderable as error:
            withheld.append(error)
            continue
        kept.append(resource)
    return kept


def withheld_outcome(withheld: list[Unrenderable]) -> dict[str, Any]:
    """Return the OperationOutcome naming the resources left out of a Bundle."""
    from adapter.errors import issue, operation_outcome

    return operation_outcome([issue("warning", "exception", f"Left out: {error.message}")
                              for error in withheld])


def ignored_outcome(ignored: list[str]) -> dict[str, Any]:
    """Return the OperationOutcome saying which parameters were ignored (lenient handling)."""
    from adapter.errors import issue, operation_outcome

    return operation_outcome([issue("warning", "not-supported",
                                    f"Parameter ignored: {name} (not supported here; send "
                                    "Prefer: handling=strict to get an error instead).", name)
                              for name in ignored])


def count_bundle(total: int) -> dict[str, Any]:
    """Return the Bundle of a ``_summary=count`` search."""
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": now_instant()}, "type": "searchset", "total": total,
            "link": page_links(request.path.rsplit("/", 1)[-1], None)}


def history_bundle(resource_type: str, resource_id: str,
                   versions: list[tuple[dict[str, Any] | None, str, str, str]]) -> dict[str, Any]:
    """Return a history Bundle; each version is (resource or None if deleted, version id,
    method, last updated). A version that cannot be rendered keeps its entry without the
    resource, its ``response.outcome`` saying why."""
    entries = []
    for resource, version, method, updated in versions:
        url = f"{fhir_base()}/{resource_type}/{resource_id}"
        entry: dict[str, Any] = {"fullUrl": url}
        withheld: list[Unrenderable] = []
        if resource is not None and renderable([resource], withheld):
            entry["resource"] = resource
        entry["request"] = {"method": method, "url": f"{resource_type}/{resource_id}"}
        entry["response"] = {"status": "410" if resource is None else "200",
                             "etag": f'W/"{version}"', "lastModified": updated}
        if withheld:
            entry["response"]["outcome"] = withheld_outcome(withheld)
        entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": now_instant()}, "type": "history", "total": len(entries),
            "link": [{"relation": "self", "url": f"{fhir_base()}/{resource_type}/{resource_id}"
                                                 "/_history"}],
            "entry": entries}
