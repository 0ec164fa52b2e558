"""Conformance resources served read-only (docs/architecture.md "Schemas are published
artefacts"): this service's StructureDefinitions, CodeSystems, ValueSets and the
OperationDefinitions of its own operations (``schemas/fhir``)
and the ConceptMaps of its mappings (``mappings/conceptmaps``), rebased on the configured
canonical base so that a harness can fetch exactly what it is tested against."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any, ClassVar, Final

import orjson
from flask import current_app
from sqlalchemy.orm import Session

from adapter.config import PROJECT_ROOT
from adapter.errors import MethodNotAllowed, NotFound
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.search import SearchParam, SearchRequest, decode_cursor, encode_cursor
from adapter.security.caller import Caller
from adapter.settings import Settings
from adapter.systems import DEFAULT_CANONICAL_BASE

FOLDERS: Final = (PROJECT_ROOT / "schemas" / "fhir", PROJECT_ROOT / "mappings" / "conceptmaps")
PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id"),
    SearchParam("url", "uri", "Canonical URL",
                "http://hl7.org/fhir/SearchParameter/conformance-url"),
    SearchParam("name", "string", "Computer-friendly name (starts with)",
                "http://hl7.org/fhir/SearchParameter/conformance-name"),
)}


@functools.lru_cache(maxsize=4)
def published(base: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Return every published resource by (type, id), rebased on ``base`` (read once)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for folder in FOLDERS:
        for path in sorted(folder.glob("*.json")):
            text = path.read_text(encoding="utf-8").replace(DEFAULT_CANONICAL_BASE, base)
            resource = orjson.loads(text)
            resource.setdefault("id", _id_from(path))
            out[(resource["resourceType"], resource["id"])] = resource
    return out


def _id_from(path: Path) -> str:
    """Return an id for a file without one: its name after the type prefix."""
    return path.stem.split("-", 1)[-1]


def _rendered(resource: dict[str, Any]) -> Rendered:
    """Return a published resource with a version from its business version and date."""
    version = int(resource.get("version", "1").split(".")[0] or 1) \
        if str(resource.get("version", "1")).split(".")[0].isdigit() else 1
    day = dt.date.fromisoformat(str(resource.get("date", "2026-11-25"))[:10])
    moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    shown = {**resource, "meta": {**resource.get("meta", {}), "versionId": str(version),
                                  "lastUpdated": moment.isoformat().replace("+00:00", "Z")}}
    return Rendered(shown, version, moment)


class PublishedHandler:
    """Read and search of one published conformance resource type: public, as the
    CapabilityStatement is (FHIR R4 conformance-module.html: what a client needs to know
    before it can talk to the server), so ``conformance`` declares its routes public."""

    conformance: ClassVar[bool] = True
    resource_type: ClassVar[str] = "StructureDefinition"
    interactions: ClassVar[tuple[str, ...]] = ("read", "vread", "search-type")
    search_params: ClassVar[dict[str, SearchParam]] = PARAMS
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _all(self) -> list[dict[str, Any]]:
        """Return this type's resources, ordered by id."""
        items = published(str(current_app.config["CANONICAL_BASE"]))
        return [r for (kind, _id), r in sorted(items.items()) if kind == self.resource_type]

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return one resource.

        :raises NotFound: no such resource.
        """
        items = published(str(current_app.config["CANONICAL_BASE"]))
        resource = items.get((self.resource_type, resource_id))
        if resource is None:
            raise NotFound(f"No {self.resource_type}/{resource_id} is published here.")
        return _rendered(resource)

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return the one published version.

        :raises NotFound: another version.
        """
        rendered = self.read(session, resource_id, caller)
        if rendered.version != version:
            raise NotFound(f"{self.resource_type}/{resource_id} has only version "
                           f"{rendered.version}.")
        return rendered

    def _matches(self, search: SearchRequest) -> list[dict[str, Any]]:
        """Return the resources matching every criterion."""
        found = self._all()
        for criterion in search.criteria:
            name = criterion.param.name
            key = {"_id": "id", "url": "url", "name": "name"}[name]
            found = [r for r in found if any(
                str(r.get(key, "")).lower().startswith(v.lower()) if name == "name"
                else r.get(key) == v for v in criterion.values)]
        return found

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of matches (cursor: the last id)."""
        found = self._matches(search)
        if search.cursor:
            last = decode_cursor(search.cursor, 1)[0]
            found = [r for r in found if r["id"] > last]
        page = found[:search.count]
        cursor = encode_cursor(page[-1]["id"]) if len(found) > search.count and page else None
        return Page([_rendered(r).resource for r in page], [], cursor, len(self._matches(search)))

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return the number of matches."""
        return len(self._matches(search))

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return the one published version (no history-instance route is offered)."""
        rendered = self.read(session, resource_id, caller)
        return [(rendered, rendered.version, "PUT", rendered.last_updated)]

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Published resources are read-only (no create route is offered).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed(f"{self.resource_type} is published read-only.")

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Published resources are read-only (no update route is offered).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed(f"{self.resource_type} is published read-only.")

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Published resources are read-only (no delete route is offered).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed(f"{self.resource_type} is published read-only.")

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Not offered (no $validate route)."""
        return []


def published_handler(name: str, settings: Settings) -> PublishedHandler:
    """Return the handler of one published type (``adapter.registry.PUBLISHED_TYPES``)."""
    handler: PublishedHandler = type(f"Published{name}Handler", (PublishedHandler,),
                                     {"resource_type": name})(settings)
    return handler
