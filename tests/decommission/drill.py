"""The decommissioning drill as steps the tests share: demo data with
planted canaries, four systems that receive different children by different paths (full-resource
notifications, reads, eCAF re-keying, a bulk export), and helpers to act as each of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.export.runner import join_jobs
from adapter.identifiers import make_test_nhs_number
from adapter.models import Child, ChildName, LedgerEntry, Organisation
from adapter.models.canonical import normalise_name
from tests.api.conftest import bearer
from tests.notify.helpers import dispatch, subscribe, subscription
from tests.notify.receivers import Receiver

# Planted personal data that must not survive destruction anywhere in the database files.
CANARY_NAMES = ("Zanzibarquux", "Qwertzuiopia", "Xylophonetta")
CANARY_POSTCODES = ("ZE3 9QX", "YO91 9WZ", "ZE2 9QT")
MOVED_POSTCODE = "ZE1 0QW"  # the first canary child's new address: the old one is history
CANARY_NHS = tuple(make_test_nhs_number(n) for n in (987_001, 987_002, 987_003))
JSON = {"Content-Type": "application/fhir+json"}
ASYNC = {"Prefer": "respond-async"}


def canaries() -> list[bytes]:
    """Return every canary as lower-case bytes (names are stored lower-cased for search)."""
    values = [*CANARY_NAMES, *CANARY_POSTCODES, MOVED_POSTCODE, *CANARY_NHS]
    values += [p.replace(" ", "") for p in (*CANARY_POSTCODES, MOVED_POSTCODE)]
    return [v.lower().encode() for v in values]


def found_canaries(data: bytes) -> list[bytes]:
    """Return the canaries present in ``data`` (compared lower-cased)."""
    lowered = data.lower()
    return [c for c in canaries() if c in lowered]


@dataclass
class Drill:
    """The systems of the drill and what each received."""

    app: Flask
    client: FlaskClient
    db: Database
    receiver: Receiver
    authority: str
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    canary_ids: list[str] = field(default_factory=list)
    received: dict[str, set[str]] = field(default_factory=dict)

    @property
    def runner(self) -> FlaskCliRunner:
        """A CLI runner on the app."""
        return self.app.test_cli_runner()

    def cli(self, *args: str) -> Any:
        """Run ``contactpoint-gateway decommission ARGS``; return the result."""
        from adapter.decommission.cli import decommission_group

        return self.runner.invoke(decommission_group, list(args))

    def get(self, who: str, path: str, **kwargs: Any) -> Any:
        """GET ``path`` as ``who``."""
        return self.client.get(path, headers={**self.headers[who], **kwargs.pop("headers", {})},
                               **kwargs)

    def put(self, who: str, path: str, body: dict[str, Any]) -> Any:
        """PUT a FHIR JSON body as ``who``."""
        return self.client.put(path, data=orjson.dumps(body),
                               headers={**self.headers[who], **JSON})

    def ledger(self) -> dict[str, set[str]]:
        """Return the delivery ledger: client id -> children."""
        with self.db.sessions() as session:
            rows = session.execute(select(LedgerEntry.client_id, LedgerEntry.child_ref))
            out: dict[str, set[str]] = {}
            for client_id, ref in rows:
                out.setdefault(client_id, set()).add(ref)
            return out


def _authority_children(db: Database, authority: str) -> list[str]:
    """Return the Patient ids of an authority's live children, in id order."""
    with db.sessions() as session:
        return list(session.scalars(
            select(Child.resource_id).join(Organisation, Child.managing_organisation)
            .where(Organisation.gss_code == authority, Child.record_status == "live",
                   Child.shielded.is_(False)).order_by(Child.id)))


def plant_canaries(db: Database, ids: list[str]) -> None:
    """Give three children canary names, NHS numbers and postcodes (a directory change)."""
    with db.write_transaction() as session:
        for index, rid in enumerate(ids):
            child = session.scalar(select(Child).where(Child.resource_id == rid))
            assert child is not None
            name: ChildName = child.names[0]
            name.family, name.family_norm = CANARY_NAMES[index], normalise_name(
                CANARY_NAMES[index])
            child.nhs_number, child.nhs_number_status = CANARY_NHS[index], "01"
            child.address_status = "current"
            child.address_paon, child.address_town = "1", "Lerwick"
            child.address_postcode = CANARY_POSTCODES[index]


def move_first_canary(db: Database, rid: str) -> None:
    """Move the first canary child: its old postcode lives on in the version history."""
    with db.write_transaction() as session:
        child = session.scalar(select(Child).where(Child.resource_id == rid))
        assert child is not None
        child.address_postcode = MOVED_POSTCODE


def start(app: Flask, client: FlaskClient, db: Database, receiver: Receiver) -> Drill:
    """Load demo data and register the drill's systems with their subscriptions."""
    load_demo_data(db, children=24, authorities=2, seed=7, progress=False)
    with db.sessions() as session:
        authority = list(session.scalars(select(Organisation.gss_code).where(
            Organisation.type == "local-authority").order_by(Organisation.id)))[0]
    assert authority is not None
    drill = Drill(app, client, db, receiver, authority)
    rights = {"admin": ["shielded", "sensitive", "audit", "admin"]}
    for name, org in (("admin", authority), ("la-one", authority), ("sub-a", "A81001"),
                      ("sub-b", "A81002"), ("sub-c", authority), ("la-four", "E09000002")):
        drill.headers[name] = bearer(client, app, name, org, rights.get(name))
    own = _authority_children(db, authority)
    drill.canary_ids = own[:3]
    # sub-a receives two children in full-resource notifications (filtered by _id); every
    # subscriber asks for its purge instructions over its own subscription.
    subscribe(client, drill.headers["sub-a"], subscription(
        "directory-entry-changed", receiver.url("/sub-a/changes"), content="full-resource",
        filters=(f"Patient?_id={own[0]},{own[3]}",)))
    for name in ("sub-a", "sub-b", "sub-c"):
        subscribe(client, drill.headers[name], subscription(
            "purge-instruction", receiver.url(f"/{name}/purge"), content="full-resource"))
        subscribe(client, drill.headers[name], subscription(
            "decommission-notice", receiver.url(f"/{name}/notice"), content="full-resource"))
    dispatch(app)  # the handshakes
    plant_canaries(db, drill.canary_ids)
    move_first_canary(db, drill.canary_ids[0])
    with db.write_transaction() as session:  # a change of the other filtered child
        other = session.scalar(select(Child).where(Child.resource_id == own[3]))
        assert other is not None
        other.names[0].given = ["Robin"]
    dispatch(app)
    drill.received["sub-a"] = {own[0], own[3]}
    drill.received["sub-b"] = {own[1], own[4]}
    return drill


def read_as_sub_b(drill: Drill) -> None:
    """sub-b reads two children (run-down: reads are allowed)."""
    for rid in sorted(drill.received["sub-b"]):
        response = drill.get("sub-b", f"/fhir/Patient/{rid}")
        assert response.status_code == 200, response.json


def export_as_la_four(drill: Drill) -> set[str]:
    """la-four runs a bulk export of Patients (allowed in run-down); return the ids exported."""
    kick = drill.get("la-four", "/fhir/$export?_type=Patient", headers=ASYNC)
    assert kick.status_code == 202, kick.json
    join_jobs(timeout=60)
    manifest = drill.client.get(kick.headers["Content-Location"],
                                headers=drill.headers["la-four"])
    assert manifest.status_code == 200, manifest.json
    ids: set[str] = set()
    for item in manifest.json["output"]:
        with drill.client.get(item["url"], headers=drill.headers["la-four"]) as response:
            ids |= {orjson.loads(line)["id"] for line in response.data.splitlines()}
    drill.received["la-four"] = ids
    return ids


def export_folder(app: Flask) -> Path:
    """Return the folder of bulk export files."""
    return Path(app.config["INSTANCE_PATH"]) / "exports"


def export_as_operator(drill: Drill) -> Path:
    """The operator exports the authority's children with the CLI, as itself (no ``--as``):
    no client holds these files; return their folder."""
    from adapter.directory.cli import export_command

    folder = Path(drill.app.config["INSTANCE_PATH"]) / "operator-export"
    result = drill.runner.invoke(export_command, ["--authority", drill.authority, "--format",
                                                  "fhir-ndjson", "--out", str(folder),
                                                  "--quiet"])
    assert result.exit_code == 0, result.output
    assert any(folder.rglob("*.ndjson"))
    return folder
