"""``contactpoint-gateway import`` and ``export`` (README "Directory XML and bulk import").

``import FILE...`` detects what each file is: a directory XML batch (``DirectoryEntries`` or
``AssessmentReferences``), a FHIR Bundle (JSON or XML) or NDJSON of FHIR resources (a folder
stands for the files in it); it shows a progress bar on stderr and prints each rejected record
(its number, line and reason: never a value of the record, so no personal data), then a summary
per file. Exit code: 0 every record applied, 1 some records rejected, 2 a file unusable (not
one of these formats, or unreadable part of the way: the records before that point are applied).

The commands act as a system caller ``cli`` with every right (recorded so in the audit; an
export acts on behalf of the exported authority, whose own local identifiers it shows), or
``--as CLIENT`` as a registered client, with its organisation, scopes and rights.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, cast

import click
import orjson
from flask import current_app, g
from flask.cli import with_appcontext
from sqlalchemy import func, select
from tqdm import tqdm

from adapter.db import get_db
from adapter.directory.schema import NS
from adapter.directory.split import read_batch_file
from adapter.directory.writer import ImportOutcome, write_assessments_data, write_entries_data
from adapter.errors import BadRequest
from adapter.export.operator import files_in, record_operator_export
from adapter.models import Child, Client, Organisation
from adapter.models.security import CLIENT_RIGHTS
from adapter.security.caller import Caller
from adapter.security.policy.phase import command_kind
from adapter.security.scopes import parse_scopes
from adapter.xmlsafe import iterparse_safe

EXIT_OK, EXIT_REJECTED, EXIT_UNUSABLE = 0, 1, 2
FHIR_NS: Final = "http://hl7.org/fhir"
ROOTS: Final = {f"{{{NS}}}DirectoryEntries": "entries",
                f"{{{NS}}}AssessmentReferences": "assessments", f"{{{FHIR_NS}}}Bundle": "fhir-xml"}
SUFFIXES: Final = (".xml", ".json", ".ndjson")
DETAIL: Final = "import command"


class Unusable(Exception):
    """A file that is not one of the formats the import takes (or unreadable)."""


def cli_caller(as_client: str | None) -> Caller:
    """Return the caller the CLI acts as: ``cli`` with every right, or a registered client.

    :raises click.ClickException: no such active client.
    """
    request_id = f"cli-{uuid.uuid4().hex[:16]}"
    if as_client is None:
        return Caller("cli", "-", parse_scopes("system/*.cruds"), frozenset(CLIENT_RIGHTS),
                      None, request_id)
    with get_db().sessions() as session:
        client = session.scalar(select(Client).where(Client.client_id == as_client))
        if client is None or client.status != "active":
            raise click.ClickException(f"no active client {as_client}")
        return Caller(client.client_id, client.organisation_code, parse_scopes(client.scopes),
                      frozenset(client.rights), None, request_id)


def detect(path: Path) -> str:
    """Return what a file is: entries, assessments, fhir-xml, fhir-json or ndjson.

    :raises Unusable: none of these.
    """
    with open(path, "rb") as stream:
        head = stream.read(1 << 16).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        events = cast("Generator[tuple[str, Any], None, None]",
                      iterparse_safe(str(path), events=("start",)))
        try:
            _event, root = next(events)
        except (BadRequest, StopIteration) as error:
            raise Unusable(getattr(error, "message", "not XML")) from None
        finally:
            events.close()
        if root.tag not in ROOTS:
            raise Unusable("not a DirectoryEntries or AssessmentReferences batch nor a FHIR "
                           "Bundle")
        return ROOTS[root.tag]
    if head.startswith(b"{"):
        return _json_kind(path)
    raise Unusable("neither XML nor JSON")


def _json_kind(path: Path) -> str:
    """Return fhir-json (one JSON document) or ndjson (one resource per line)."""
    with open(path, "rb") as stream:
        lines = (line for line in stream if line.strip())
        first, second = next(lines, b""), next(lines, None)
    try:
        value = orjson.loads(first)
    except orjson.JSONDecodeError:
        return "fhir-json"  # a document over several lines
    if second is None and isinstance(value, dict) and value.get("resourceType") == "Bundle":
        return "fhir-json"
    return "ndjson"


def expand(paths: Iterable[str]) -> list[Path]:
    """Return the files named, a folder standing for its .xml, .json and .ndjson files."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in SUFFIXES))
        else:
            found.append(path)
    return found


class Tally:
    """What the records of one file came to: a count per status, and each distinct note of
    the records applied (what was not kept or was changed, as the REST answer says it) with
    how many records it was given for and where first, so that a file of a million records
    reports a note once, not a million times."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.notes: dict[str, tuple[int, str]] = {}

    def add(self, outcome: ImportOutcome) -> None:
        """Count a record's status and its notes."""
        self.counts[outcome.status] += 1
        for note in outcome.notes:
            seen, first = self.notes.get(note, (0, where_of(outcome)))
            self.notes[note] = (seen + 1, first)


def where_of(outcome: ImportOutcome) -> str:
    """Return "record N" or "record N, line L"."""
    line = f", line {outcome.line}" if outcome.line else ""
    return f"record {outcome.record_number}{line}"


def report(name: str, outcomes: Iterator[ImportOutcome], tally: Tally) -> None:
    """Print each rejected record (number, line, reason; no value) and tally every record."""
    for outcome in outcomes:
        tally.add(outcome)
        if outcome.status == "rejected":
            path = f" [{outcome.expression}]" if outcome.expression else ""
            click.echo(f"{name}: {where_of(outcome)}: {outcome.reason}{path}")


def summary(name: str, tally: Tally) -> None:
    """Print the counts of one file, then its notes (each once, with how many records)."""
    counts = tally.counts
    click.echo(f"{name}: {counts['created']} created, {counts['updated']} updated, "
               f"{counts['unchanged']} unchanged, {counts['rejected']} rejected")
    for note, (seen, first) in tally.notes.items():
        click.echo(f"{name}: {seen} record(s), first {first}: {note}")


def import_batch(path: Path, kind: str, caller: Caller, quiet: bool, workers: int) -> int:
    """Import a directory XML batch file, read record by record into canonical records (by
    ``workers`` processes reading pieces of it: ``adapter.directory.split``) that
    ``adapter.imports.directory`` applies in file order; return its exit code."""
    from adapter.imports.directory import import_assessments, import_entries

    run = import_entries if kind == "entries" else import_assessments
    tally = Tally()
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, file=sys.stderr,
              disable=quiet) as bar:
        try:
            records = read_batch_file(path, kind, workers, bar.update)
            report(path.name, run(get_db(), records, caller, detail=DETAIL), tally)
        except BadRequest as error:
            click.echo(f"{path.name}: unusable: {error.message} ({sum(tally.counts.values())} "
                       "records before it were applied)", err=True)
            summary(path.name, tally)
            return EXIT_UNUSABLE
    summary(path.name, tally)
    return EXIT_REJECTED if tally.counts["rejected"] else EXIT_OK


def import_fhir(paths: list[Path], kind: str, caller: Caller, quiet: bool) -> int:
    """Import a FHIR Bundle file, or NDJSON files together; return the exit code."""
    from adapter.fhir.body import parse_json_resource
    from adapter.fhir.file_import import apply_bundle, apply_ndjson
    from adapter.fhir.xml import loads_resource

    name = paths[0].name if len(paths) == 1 else f"{len(paths)} NDJSON files"
    tally = Tally()
    try:
        if kind == "ndjson":
            outcomes = apply_ndjson(paths, caller)
        else:
            data = paths[0].read_bytes()
            outcomes = apply_bundle(parse_json_resource(data) if kind == "fhir-json"
                                    else loads_resource(data), caller)
        bar = tqdm(outcomes, unit=" resources", file=sys.stderr, disable=quiet)
        report(name, iter(bar), tally)
    except BadRequest as error:
        click.echo(f"{name}: unusable: {error.message}", err=True)
        return EXIT_UNUSABLE
    summary(name, tally)
    return EXIT_REJECTED if tally.counts["rejected"] else EXIT_OK


def _cli_base() -> str:
    """Return the base URL the CLI names this server by (as the ``token`` command does)."""
    configured: str = current_app.config["PUBLIC_URL"]
    return configured.rstrip("/") or f"http://127.0.0.1:{current_app.config['PORT']}"


# Entries before the assessment references that name their children; NDJSON last, together.
KIND_ORDER: Final = ("entries", "assessments", "fhir-json", "fhir-xml", "ndjson")


def run_imports(paths: list[Path], caller: Caller, quiet: bool, workers: int = 1) -> int:
    """Import every file in the order references need; return the worst exit code."""
    codes, ndjson, kinds = [], [], []
    for path in paths:
        try:
            kinds.append((KIND_ORDER.index(detect(path)), path))
        except (Unusable, OSError) as error:
            click.echo(f"{path.name}: unusable: {error}", err=True)
            codes.append(EXIT_UNUSABLE)
    for rank, path in sorted(kinds, key=lambda item: item[0]):
        kind = KIND_ORDER[rank]
        if kind == "ndjson":
            ndjson.append(path)
        elif kind in ("entries", "assessments"):
            codes.append(import_batch(path, kind, caller, quiet, workers))
        else:
            codes.append(import_fhir([path], kind, caller, quiet))
    if ndjson:
        codes.append(import_fhir(ndjson, "ndjson", caller, quiet))
    return max(codes, default=EXIT_OK)


@command_kind("write")
@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--as", "as_client", default=None, help="Act as this registered client.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              show_default="the number of cores",
              help="Processes reading a directory XML file (1: this process only).")
@with_appcontext
def import_command(files: tuple[str, ...], as_client: str | None, quiet: bool,
                   workers: int) -> None:
    """Import directory XML batches, FHIR Bundles (JSON/XML) or NDJSON files of resources.

    Directory XML files are read by --workers processes, each parsing and validating
    pieces of the file cut at record boundaries, while this process applies the records in
    file order. Exit code 0: all applied; 1: some records rejected; 2: a file unusable.
    """
    caller = cli_caller(as_client)
    with current_app.test_request_context("/", base_url=_cli_base()):
        g.caller = caller
        code = run_imports(expand(files), caller, quiet, workers)
    click.get_current_context().exit(code)


def _authority(gss_code: str) -> tuple[int, int]:
    """Return the internal id of a local authority and how many children it manages.

    :raises click.ClickException: no such local authority.
    """
    with get_db().sessions() as session:
        found = session.scalar(select(Organisation.id).where(
            Organisation.gss_code == gss_code.strip().upper(),
            Organisation.type == "local-authority"))
        if found is None:
            raise click.ClickException(f"no local authority with GSS code {gss_code}")
        total = session.scalar(select(func.count(Child.id)).where(
            Child.managing_organisation_id == found))
        return found, int(total or 0)


def export_xml(gss_code: str, out: Path, caller: Caller, total: int, quiet: bool) -> None:
    """Write the authority's entries and assessment references as two batch files."""
    from adapter.export.directory import ListQuery, iter_pages

    spec = ListQuery(gss_code.strip().upper(), None, 500)
    db = get_db()
    skipped: list[str] = []
    with open(out / "directory-entries.xml", "xb") as stream, \
            tqdm(total=total, unit=" entries", file=sys.stderr, disable=quiet) as bar:
        pages = iter_pages(db, spec, caller)
        written = write_entries_data(_records(pages, bar), stream, skipped=skipped)
    with open(out / "assessment-references.xml", "xb") as stream:
        references = write_assessments_data(
            _records(iter_pages(db, spec, caller, assessments=True), None), stream,
            skipped=skipped)
    click.echo(f"wrote {written} entries to {out / 'directory-entries.xml'} and {references} "
               f"assessment references to {out / 'assessment-references.xml'}")
    report_skipped(skipped)


def report_skipped(skipped: list[str]) -> None:
    """Name on stderr the records an export left out because they cannot be rendered (the
    files are complete documents holding every other record) and exit 1: the export is
    incomplete (docs/architecture.md "Records that cannot be rendered")."""
    if skipped:
        click.echo(f"left out {len(skipped)} record(s) that cannot be rendered (see the log; "
                   f"the stored records need correcting): {', '.join(skipped)}", err=True)
        click.get_current_context().exit(1)


def _records(pages: Iterable[Any], bar: tqdm[Any] | None) -> Iterator[dict[str, Any]]:
    """Yield the records of pages, advancing the bar."""
    for page in pages:
        yield from page.records
        if bar is not None:
            bar.update(len(page.records))


def export_ndjson(authority_id: int, out: Path, caller: Caller, total: int,
                  quiet: bool) -> None:
    """Write the authority's FHIR resources as NDJSON files, one per type."""
    from adapter.export.ndjson_command import NdjsonExport

    with tqdm(total=total, unit=" children", file=sys.stderr, disable=quiet) as bar:
        export = NdjsonExport(get_db(), authority_id, caller, bar.update)
        counts = export.run(out)
    for resource_type, count in sorted(counts.items()):
        click.echo(f"wrote {count} {resource_type} resources to {out}")
    report_skipped(export.skipped)


@command_kind("read")
@click.command("export")
@click.option("--authority", required=True, help="GSS code of the managing local authority.")
@click.option("--format", "fmt", required=True,
              type=click.Choice(["fhir-ndjson", "directory-xml"]), help="What to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--as", "as_client", default=None, help="Act as this registered client.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_appcontext
def export_command(authority: str, fmt: str, out: str, as_client: str | None,
                   quiet: bool) -> None:
    """Export an authority's children (streamed): NDJSON per FHIR type, or directory XML.

    \f
    :raises click.ClickException: no such authority, or an output file exists already.
    """
    authority_id, total = _authority(authority)
    caller = cli_caller(as_client)
    if as_client is None:
        # The system caller exports on the authority's behalf: its own local identifiers are
        # shown, other organisations' stay withheld (docs/domain.md "Other organisations' numbers").
        caller = replace(caller, organisation_code=authority.strip().upper())
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    before = files_in(folder)
    try:
        if fmt == "directory-xml":
            export_xml(authority, folder, caller, total, quiet)
        else:
            export_ndjson(authority_id, folder, caller, total, quiet)
    except FileExistsError as error:
        raise click.ClickException(f"{error.filename} exists already: choose an empty "
                                   "folder") from error
    finally:
        if as_client is None:  # no holder to instruct: destruction removes these files
            record_operator_export(get_db(), authority, fmt, folder, before)
