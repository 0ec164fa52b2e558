"""``contactpoint-gateway import`` and ``export``: directory XML and FHIR NDJSON round trips
into an empty directory, per-record error reports without personal data, exit codes, FHIR
Bundles (JSON and XML), acting as a registered client; on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from lxml import etree
from sqlalchemy import func, select

from adapter import create_app
from adapter.cli import main
from adapter.db import Database
from adapter.directory.schema import ASSESSMENT_XSD, ENTRY_XSD, load_schema
from adapter.fhir.xml import dumps_resource
from adapter.models import AuditRecord, Child, LedgerEntry
from tests.conftest import POSTGRES_URL, PostgresSchema
from tests.directory.batches import Batch, demo_batches
from tests.security.helpers import register


def invoke(app: Flask, *args: str) -> Result:
    """Run the CLI against ``app``."""
    return CliRunner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app))


@pytest.fixture
def target(backend: str, tmp_path: Path) -> Iterator[Flask]:
    """A second gateway on its own empty database (same backend as ``app``)."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url, options = f"sqlite:///{tmp_path / 'target.db'}", {}
        else:
            assert POSTGRES_URL
            schema = stack.enter_context(PostgresSchema(POSTGRES_URL))
            url, options = POSTGRES_URL, schema.engine_options()
        database = Database(url, **options)
        stack.callback(database.close)
        database.upgrade()
        application = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(tmp_path / "t"),
                                  "TESTING": True})
        application.extensions["db"].close()
        application.extensions["db"] = database
        yield application


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Directory XML files of 40 demo children of one authority (entries, references)."""
    folder = tmp_path_factory.mktemp("cli-files")
    entries, references, gss = demo_batches(folder, 40, seed=9)
    (folder / "entries.xml").write_bytes(entries.document())
    (folder / "references.xml").write_bytes(references.document())
    return folder / "entries.xml", folder / "references.xml", gss


def children(app: Flask) -> int:
    """Return how many children the app's directory holds."""
    with app.extensions["db"].sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Child)) or 0)


def test_directory_xml_round_trip(app: Flask, target: Flask, tmp_path: Path,
                                  files: tuple[Path, Path, str]) -> None:
    """Import (exit 0), export as directory XML (valid batches), import the export into an
    empty directory, then again: nothing changes the second time."""
    entries, references, gss = files
    first = invoke(app, "import", str(entries), str(references), "--quiet")
    assert first.exit_code == 0, first.output
    assert "0 rejected" in first.output and children(app) == 40
    out = tmp_path / "out"
    exported = invoke(app, "export", "--authority", gss, "--format", "directory-xml",
                      "--out", str(out), "--quiet")
    assert exported.exit_code == 0, exported.output
    load_schema(ENTRY_XSD).assertValid(etree.parse(str(out / "directory-entries.xml")))
    load_schema(ASSESSMENT_XSD).assertValid(etree.parse(str(out / "assessment-references.xml")))
    again = invoke(target, "import", str(out), "--quiet")
    assert again.exit_code == 0, again.output
    assert children(target) == 40
    twice = invoke(target, "import", str(out), "--quiet")
    assert twice.exit_code == 0 and "0 created, 0 updated" in twice.output
    with target.extensions["db"].sessions() as session:
        who = set(session.scalars(select(AuditRecord.client_id).where(
            AuditRecord.action == "import-create")))
    assert who == {"cli"}
    refused = invoke(app, "export", "--authority", gss, "--format", "directory-xml",
                     "--out", str(out), "--quiet")
    assert refused.exit_code == 1 and "exists already" in refused.output


def test_rejected_records_are_listed_without_personal_data(app: Flask, tmp_path: Path,
                                                           files: tuple[Path, Path, str]
                                                           ) -> None:
    """A file with a broken record: exit 1, the record's number, line and reason printed,
    no name or identifier from the file."""
    entries, _references, _gss = files
    batch, broken = Batch.of(entries.read_bytes()).broken(20)
    path = tmp_path / "broken.xml"
    path.write_bytes(batch.document())
    result = invoke(app, "import", str(path), "--quiet")
    assert result.exit_code == 1, result.output
    for number in broken:
        assert f"record {number}, line {batch.lines()[number - 1]}:" in result.output
    root = etree.fromstring(batch.document())
    values = {e.text for e in root.iter() if e.text and e.text.strip() and len(e.text) > 4
              and etree.QName(e).localname in ("PersonFamilyName", "ContactPointId",
                                                 "NhsNumber", "PostCode")}
    assert not [v for v in values if v in result.output]


@pytest.mark.parametrize("content", [b"hello", b"<Other/>", b'{"resourceType": "Patient"',
                                     b"<DirectoryEntries/>"])
def test_an_unusable_file_exits_2(app: Flask, tmp_path: Path, content: bytes) -> None:
    """Not a batch, a Bundle or NDJSON: exit 2, nothing imported."""
    path = tmp_path / "file.xml"
    path.write_bytes(content)
    result = invoke(app, "import", str(path), "--quiet")
    assert result.exit_code == 2, result.output
    assert "unusable" in result.output and children(app) == 0


def test_acting_as_another_authoritys_client(app: Flask, files: tuple[Path, Path, str]) -> None:
    """``--as`` a client of another authority: every record rejected, exit 1."""
    register(app, "other-la", organisation="E09000033")
    result = invoke(app, "import", str(files[0]), "--as", "other-la", "--quiet")
    assert result.exit_code == 1 and "not your authority" in result.output
    assert children(app) == 0
    assert invoke(app, "import", str(files[0]), "--as", "nobody").exit_code == 1


def _resources(folder: Path) -> dict[tuple[str, str], Any]:
    """Return the resources of an NDJSON export by (type, id), without version metadata."""
    found = {}
    for path in folder.glob("*.ndjson"):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            meta = resource.get("meta", {})
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
            if not meta:
                resource.pop("meta", None)
            found[(resource["resourceType"], resource["id"])] = resource
    return found


def test_ndjson_export_reimports_to_the_same_resources(app: Flask, target: Flask,
                                                       tmp_path: Path,
                                                       files: tuple[Path, Path, str]) -> None:
    """An authority's NDJSON export imported into an empty directory exports the same FHIR
    resources (ids, contents; versions aside).

    The source holds no other organisation's local identifiers: the export shows what its
    caller may see, and those are withheld from everyone but their organisation (docs/domain.md
    "Other organisations' numbers"), so a re-import could not hold them.
    """
    entries, references, gss = files
    for path in (entries, references):
        stripped = re.sub(rb"\s*<LocalIdentifier>.*?</LocalIdentifier>", b"",
                          path.read_bytes(), flags=re.DOTALL)
        path = tmp_path / path.name
        path.write_bytes(stripped)
    entries, references = tmp_path / entries.name, tmp_path / references.name
    assert invoke(app, "import", str(entries), str(references), "--quiet").exit_code == 0
    source = tmp_path / "source"
    exported = invoke(app, "export", "--authority", gss, "--format", "fhir-ndjson",
                      "--out", str(source), "--quiet")
    assert exported.exit_code == 0, exported.output
    imported = invoke(target, "import", str(source), "--quiet")
    assert imported.exit_code == 0, imported.output
    copy = tmp_path / "copy"
    assert invoke(target, "export", "--authority", gss, "--format", "fhir-ndjson",
                  "--out", str(copy), "--quiet").exit_code == 0
    before, after = _resources(source), _resources(copy)
    assert {kind for kind, _ in before} >= {"Patient", "CareTeam", "PractitionerRole",
                                            "Organization", "Practitioner"}
    assert after == before


def test_fhir_bundles_json_and_xml(app: Flask, target: Flask, tmp_path: Path,
                                   files: tuple[Path, Path, str]) -> None:
    """A collection Bundle applies each resource (JSON and XML); a transaction with an
    invalid entry applies nothing (exit 1)."""
    entries, _references, gss = files
    assert invoke(app, "import", str(entries), "--quiet").exit_code == 0
    source = tmp_path / "source"
    invoke(app, "export", "--authority", gss, "--format", "fhir-ndjson", "--out", str(source),
           "--quiet")
    organisations = [orjson.loads(line) for line in
                     (source / "Organization.ndjson").read_bytes().splitlines()]
    patients = [orjson.loads(line) for line in
                (source / "Patient.ndjson").read_bytes().splitlines()]
    collection = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": r} for r in organisations + patients[:3]]}
    (tmp_path / "bundle.json").write_bytes(orjson.dumps(collection, option=orjson.OPT_INDENT_2))
    result = invoke(target, "import", str(tmp_path / "bundle.json"), "--quiet")
    assert result.exit_code == 0, result.output
    assert children(target) == 3
    collection["entry"] = [{"resource": r} for r in patients[3:5]]
    (tmp_path / "bundle.xml").write_bytes(dumps_resource(collection))
    assert invoke(target, "import", str(tmp_path / "bundle.xml"), "--quiet").exit_code == 0
    assert children(target) == 5
    broken = {**patients[6], "gender": "sometimes"}
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"Patient/{r['id']}"}}
        for r in (patients[5], broken)]}
    (tmp_path / "transaction.json").write_bytes(orjson.dumps(transaction))
    result = invoke(target, "import", str(tmp_path / "transaction.json"), "--quiet")
    assert result.exit_code == 1 and "nothing was applied" in result.output
    assert children(target) == 5


def test_a_broken_ndjson_line_is_reported_and_the_others_applied(
        app: Flask, target: Flask, tmp_path: Path, files: tuple[Path, Path, str]) -> None:
    """NDJSON with a line that is not JSON and one that is not a resource: the other lines
    are applied, each broken one is reported with its line number, exit 1."""
    entries, _references, gss = files
    assert invoke(app, "import", str(entries), "--quiet").exit_code == 0
    source = tmp_path / "source"
    invoke(app, "export", "--authority", gss, "--format", "fhir-ndjson", "--out", str(source),
           "--quiet")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Organization.ndjson").write_bytes((source / "Organization.ndjson").read_bytes())
    patients = (source / "Patient.ndjson").read_bytes().splitlines()[:4]
    lines = [patients[0], b'{"resourceType": "Patient", "id": ', patients[1], b"[1, 2]",
             *patients[2:]]
    (broken / "Patient.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    result = invoke(target, "import", str(broken))
    assert result.exit_code == 1, result.output
    assert children(target) == 4
    assert re.search(r"line 2\b.*The line is not valid JSON", result.output), result.output
    assert re.search(r"line 4\b.*The line must be a FHIR resource", result.output), result.output


@pytest.mark.parametrize("fmt", ["fhir-ndjson", "directory-xml"])
def test_an_export_for_a_client_puts_its_children_in_its_ledger(
        app: Flask, tmp_path: Path, files: tuple[Path, Path, str], fmt: str) -> None:
    """``export --as CLIENT`` hands that client's system every exported child: each is in its
    delivery ledger (the decommissioning's purge scope); the operator's own export is no holder."""
    entries, _references, gss = files
    assert invoke(app, "import", str(entries), "--quiet").exit_code == 0
    register(app, "la-system", organisation=gss)
    assert invoke(app, "export", "--authority", gss, "--format", fmt, "--out",
                  str(tmp_path / "own"), "--quiet").exit_code == 0
    result = invoke(app, "export", "--authority", gss, "--format", fmt, "--as", "la-system",
                    "--out", str(tmp_path / "for-client"), "--quiet")
    assert result.exit_code == 0, result.output
    with app.extensions["db"].sessions() as session:
        held = dict(session.execute(select(LedgerEntry.client_id, func.count())
                                    .group_by(LedgerEntry.client_id)).all())
    with app.extensions["db"].sessions() as session:  # archived entries are invisible to it
        live = session.scalar(select(func.count()).select_from(Child).where(
            Child.record_status == "live"))
    assert held == {"la-system": live}
