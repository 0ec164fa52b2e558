"""One declaration per FHIR resource type (adapter/registry.py): a type added to the
registry alone, with a provider over in-memory data and an export source over a table of its
own, is routed (read and search answer), listed in the CapabilityStatement and written by bulk
$export; and every type list the gateway keeps is the registry's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import DateTime, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from adapter import registry
from adapter.config import PROJECT_ROOT
from adapter.db import Database
from adapter.errors import MethodNotAllowed, NotFound
from adapter.export.params import parse_types
from adapter.export.sources import ExportSource
from adapter.fhir.api import handlers
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.search import SearchParam, SearchRequest
from adapter.models import ExportJob
from adapter.security.caller import Caller
from adapter.settings import Settings, load
from tests.api.test_export import ASYNC, export
from tests.fhir.fixtures import LA, bearer

NOTED = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
# A throw-away type: Basic (FHIR R4 basic.html), two resources held in memory.
BASIC = {rid: {"resourceType": "Basic", "id": rid, "meta": {"versionId": "1"},
               "code": {"text": text}} for rid, text in (("b1", "first"), ("b2", "second"))}


class BasicProvider:
    """Read and search of the in-memory Basic resources; nothing else is offered."""

    resource_type: ClassVar[str] = "Basic"
    interactions: ClassVar[tuple[str, ...]] = ("read", "search-type")
    search_params: ClassVar[dict[str, SearchParam]] = {
        "_id": SearchParam("_id", "token", "Logical id")}
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return one resource.

        :raises NotFound: no such resource.
        """
        if resource_id not in BASIC:
            raise NotFound(f"No Basic/{resource_id} here.")
        return Rendered(BASIC[resource_id], 1, NOTED)

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return the one version."""
        return self.read(session, resource_id, caller)

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return the one version."""
        return [(self.read(session, resource_id, caller), 1, "POST", NOTED)]

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return every resource matching the ``_id`` criteria, in one page."""
        wanted = {v for c in search.criteria for v in c.values}
        found = [r for rid, r in sorted(BASIC.items()) if not wanted or rid in wanted]
        return Page(found, [], None, len(found))

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many match."""
        return len(self.search(session, search, caller).matches)

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Not offered (no route).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("Basic is read-only.")

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Not offered (no route).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("Basic is read-only.")

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Not offered (no route).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("Basic is read-only.")

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Not offered (no route)."""
        return []


class Scratch(DeclarativeBase):
    """The throw-away type's own table, outside the gateway's models and migrations."""


class BasicRow(Scratch):
    """One stored Basic resource, as bulk $export reads it (adapter/export/sources.py)."""

    __tablename__ = "scratch_basic"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(String(64))
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


BASIC_EXPORT = ExportSource(BasicRow, lambda row, _base: {**BASIC[row.resource_id]})


@pytest.fixture
def declared() -> Iterator[registry.ResourceSpec]:
    """Declare Basic in the registry for one test, then remove it."""
    spec = registry.ResourceSpec("Basic", BasicProvider, exportable=True,
                                 export_source=f"{__name__}:BASIC_EXPORT")
    registry.REGISTRY["Basic"] = spec
    try:
        yield spec
    finally:
        del registry.REGISTRY["Basic"]


@pytest.fixture
def app(declared: registry.ResourceSpec, app: Flask, db: Database) -> Iterator[Flask]:
    """The gateway app built while Basic is declared, its table holding both resources; its
    export jobs run inline."""
    app.config["EXPORT_INLINE"] = True
    Scratch.metadata.create_all(db.engine)
    with db.write_transaction() as session:
        session.add_all(BasicRow(id=number, resource_id=rid, text=r["code"]["text"],
                                 last_updated=NOTED)
                        for number, (rid, r) in enumerate(sorted(BASIC.items()), 1))
    try:
        yield app
    finally:
        Scratch.metadata.drop_all(db.engine)


def test_a_declared_type_is_routed_listed_and_exported(app: Flask, client: FlaskClient,
                                                        db: Database) -> None:
    """Basic, declared only in the registry, answers read and search, is in the
    CapabilityStatement with its interactions, and bulk $export writes its file."""
    headers = bearer(client, app, "reader", LA, scopes="system/*.rs")
    read = client.get("/fhir/Basic/b2", headers=headers)
    assert read.status_code == 200, read.json
    assert read.json["code"] == {"text": "second"}
    found = client.get("/fhir/Basic?_id=b1", headers=headers)
    assert found.status_code == 200, found.json
    assert [e["resource"]["id"] for e in found.json["entry"]] == ["b1"]
    assert client.get("/fhir/Basic/b9", headers=headers).status_code == 404

    statement = client.get("/fhir/metadata").json
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Basic")
    assert [i["code"] for i in entry["interaction"]] == ["read", "search-type"]
    assert [p["name"] for p in entry["searchParam"]] == ["_id"]

    manifest, files = export(client, headers, query="?_type=Basic")
    assert [o["type"] for o in manifest["output"]] == ["Basic"]
    assert files["Basic"] == [BASIC["b1"], BASIC["b2"]]
    with db.sessions() as session:
        assert list(session.scalars(select(ExportJob.types))) == [["Basic"]]
    refused = client.get("/fhir/$export?_type=Flag", headers={**headers, **ASYNC})
    assert refused.status_code == 400
    assert "Basic" in refused.json["issue"][0]["diagnostics"]


def test_the_type_is_gone_once_removed() -> None:
    """Without the fixture, Basic is neither provided nor exported."""
    assert registry.spec_of("Basic") is None
    assert "Basic" not in {p.resource_type for p in handlers(load())}
    assert "Basic" not in registry.export_types()


def test_export_types_follow_the_registry(declared: registry.ResourceSpec) -> None:
    """_type accepts exactly the exportable types, in declaration order."""
    from werkzeug.datastructures import MultiDict

    asked = MultiDict([("_type", "Basic,Organization,Patient")])
    assert parse_types(asked, False, []) == ("Patient", "Organization", "Basic")


def test_every_map_belongs_to_one_type() -> None:
    """Each mapping file of mappings/ is declared by exactly one type, and every declared map
    exists."""
    files = sorted(p.stem for p in (PROJECT_ROOT / "mappings").glob("*.toml"))
    declared = sorted(name for spec in registry.specs() for name in spec.maps)
    assert declared == files


def test_every_provider_serves_its_declared_type() -> None:
    """Each spec's provider, made with the settings, is the provider of that type and keeps
    them; the reverse maps resolve."""
    settings = load()
    served = {spec.type: spec.provider(settings).resource_type
              for spec in registry.specs() if spec.provider is not None}
    assert all(spec.provider(settings).settings is settings
               for spec in registry.specs() if spec.provider is not None)
    assert served == {name: name for name in served}
    assert {"Patient", "CareTeam", "PractitionerRole", "Organization", "Practitioner",
            "AuditEvent", "Subscription"} <= set(served)
    for path in registry.reverse_maps().values():
        assert callable(registry.attribute(path))
