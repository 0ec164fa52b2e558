"""Directory XML batch files read in pieces cut at record boundaries
(``adapter.directory.split``, ``contactpoint-gateway import --workers``): every record gets the
number, line and outcome the whole-file reader gives it, whatever the file holds where a cut
would go; one worker and two give the same database and the same report, on SQLite and
PostgreSQL; the workers' code runs where Flask cannot be imported."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from adapter.directory import split
from adapter.directory.reader import iter_assessment_data, iter_entry_data
from adapter.errors import BadRequest
from adapter.models import AuditRecord, Child, Event
from adapter.models.canonical import canonical_dump
from adapter.store.children import child_query
from tests.conftest import REPO
from tests.directory.batches import Batch
from tests.test_cli_import_export import invoke, target

__all__ = ["target"]  # the fixture of a second, empty gateway

Files = tuple[Batch, Batch, str]
Read = tuple[list[tuple[int, int | None, Any]], str | None]
SMALL_PIECES = 6000  # about one entry a piece: every possible cut is made


def plain(item: Any) -> Any:
    """Return a record as compared: its dict, or what a refusal says."""
    if isinstance(item, dict):
        return item
    return ("refused", item.message, item.expression, item.contactpoint_id)


def whole_file(document: bytes, kind: str = "entries") -> Read:
    """Return the records of the whole-file reader and the error that ended it."""
    reader = iter_entry_data if kind == "entries" else iter_assessment_data
    records: list[tuple[int, int | None, Any]] = []
    try:
        for number, line, item in reader(io.BytesIO(document)):
            records.append((number, line, plain(item)))
    except BadRequest as error:
        return records, error.message
    return records, None


def in_pieces(path: Path, document: bytes, workers: int, piece_bytes: int = SMALL_PIECES,
              kind: str = "entries") -> Read:
    """Return the records read in pieces and the error that ended them."""
    path.write_bytes(document)
    records: list[tuple[int, int | None, Any]] = []
    try:
        for number, line, item in split.read_batch_file(path, kind, workers,
                                                        piece_bytes=piece_bytes):
            records.append((number, line, plain(item)))
    except BadRequest as error:
        return records, error.message
    return records, None


def record_starts(document: bytes) -> list[int]:
    """Return where each entry starts in a document."""
    return [found.start() for found in re.finditer(rb"<DirectoryEntry ", document)]


def insert_at(record: int, text: bytes) -> Callable[[bytes], bytes]:
    """Return an edit putting ``text`` before the entry ``record`` (0-based)."""
    def edit(document: bytes) -> bytes:
        at = record_starts(document)[record]
        return document[:at] + text + document[at:]
    return edit


def joined_lines(first: int, last: int) -> Callable[[bytes], bytes]:
    """Return an edit writing entries ``first`` to ``last`` (0-based) on one line."""
    def edit(document: bytes) -> bytes:
        starts = record_starts(document)
        return (document[:starts[first]] + document[starts[first]:starts[last]].replace(
            b"\n", b" ") + document[starts[last]:])
    return edit


def line_ends(end: bytes, first: int, last: int) -> Callable[[bytes], bytes]:
    """Return an edit ending the lines of entries ``first`` to ``last`` (0-based) by
    ``end``."""
    def edit(document: bytes) -> bytes:
        starts = record_starts(document)
        return (document[:starts[first]] + document[starts[first]:starts[last]].replace(
            b"\n", end) + document[starts[last]:])
    return edit


def wrapped(record: int) -> Callable[[bytes], bytes]:
    """Return an edit putting entry ``record`` (0-based) inside another DirectoryEntry."""
    def edit(document: bytes) -> bytes:
        starts = record_starts(document)
        return (document[:starts[record]] + b"<DirectoryEntry>" + document[
            starts[record]:starts[record + 1]] + b"</DirectoryEntry>\n"
            + document[starts[record + 1]:])
    return edit


def replaced(pattern: bytes, text: bytes, record: int) -> Callable[[bytes], bytes]:
    """Return an edit replacing the first ``pattern`` of entry ``record`` (0-based)."""
    def edit(document: bytes) -> bytes:
        at = record_starts(document)[record]
        found = re.compile(pattern).search(document, at)
        assert found is not None
        return document[:found.start()] + text + document[found.end():]
    return edit


# Files the cut must leave exactly as the whole-file reader reads them: records rejected on
# their own, things that stop the scan from cutting, and records where no cut can go.
WELL_FORMED = {
    "broken records": replaced(rb"<BirthDate>[^<]*</BirthDate>",
                               b"<BirthDate>2015-02-30</BirthDate>", 7),
    "an element that is not a record": insert_at(12, b"<Unexpected/>\n"),
    "a comment between records": insert_at(12, b"<!-- a comment -->\n"),
    "a comment in a record": replaced(rb"<Gender>", b"<!-- x --><Gender>", 9),
    "records on one line": joined_lines(5, 9),
    "a record inside a record": wrapped(15),
    "an empty record": insert_at(15, b"<DirectoryEntry/>\n"),
    "a second header": insert_at(20, b"<Header><GeneratedAt>2026-01-01T00:00:00Z</GeneratedAt>"
                                     b"<Source>x</Source></Header>\n"),
    "a record in another namespace": replaced(rb'xmlns="[^"]*"', b'xmlns="urn:other"', 18),
    "text between records": insert_at(11, b"stray text\n"),
    "lines ended by CR LF": lambda document: document.replace(b"\n", b"\r\n"),
    "lines ended by CR alone": line_ends(b"\r", 3, 8),
}
# Files whose reading stops part of the way: the same error; lxml hands out the records
# before it by blocks of the document, so the records read may stop earlier in one reading.
MALFORMED = {
    "an end tag that does not match": replaced(rb"</Gender>", b"</Gendr>", 17),
    "a file cut short in a record": lambda document: document[:record_starts(document)[22]
                                                              + 300],
    "content after the root": lambda document: document + b"<junk/>",
}


@pytest.fixture(scope="module")
def document(demo_files: Files) -> bytes:
    """The first 30 demo entries as one batch document."""
    return demo_files[0].document(30)


@pytest.mark.parametrize("edit", WELL_FORMED.values(), ids=list(WELL_FORMED))
def test_pieces_read_as_the_whole_file(document: bytes, tmp_path: Path,
                                       edit: Callable[[bytes], bytes]) -> None:
    """Every record has the number, line and outcome the whole-file reader gives it."""
    edited = edit(document)
    expected = whole_file(edited)
    assert expected[1] is None and len(expected[0]) >= 30
    assert in_pieces(tmp_path / "file.xml", edited, 1) == expected
    assert len(list(split.pieces(edited, "entries", SMALL_PIECES))) > 3


def test_each_cut_falls_between_records(document: bytes) -> None:
    """A cut is made after each record (pieces of a few bytes), and the pieces' records,
    joined, are the file's records."""
    parts = list(split.pieces(document, "entries", 1))
    assert len(parts) == 30
    assert [part.continuation for part in parts] == [False] + [True] * 29
    assert sum(part.size for part in parts) == len(document)


@pytest.mark.parametrize("edit", MALFORMED.values(), ids=list(MALFORMED))
def test_a_malformed_file_reports_the_same_error(document: bytes, tmp_path: Path,
                                                  edit: Callable[[bytes], bytes]) -> None:
    """The file's line and column of the error, in the same words; the records before it
    as the whole-file reader read them."""
    edited = edit(document)
    expected, error = whole_file(edited)
    records, piece_error = in_pieces(tmp_path / "file.xml", edited, 1)
    assert error is not None and error.startswith("Malformed XML at line ")
    assert piece_error == error
    shorter = min(len(records), len(expected))
    assert records[:shorter] == expected[:shorter]
    assert in_pieces(tmp_path / "file.xml", edited, 2) == (records, piece_error)


@pytest.mark.parametrize("document", [
    b"", b"<DirectoryEntries/>",
    b'<DirectoryEntries xmlns="urn:contactpoint-gateway:directory:1"/>',
    b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "b">]>\n'
    b'<DirectoryEntries xmlns="urn:contactpoint-gateway:directory:1"/>',
])
def test_a_file_that_cannot_be_cut_is_read_whole(tmp_path: Path, document: bytes) -> None:
    """An empty file, another namespace, no records, a DTD: one piece, the same error."""
    assert len(list(split.pieces(document, "entries"))) == 1
    expected = whole_file(document)
    assert expected[1] is not None
    assert in_pieces(tmp_path / "file.xml", document, 2) == expected


def test_two_thousand_entries_and_their_references(demo_files: Files, tmp_path: Path) -> None:
    """A file of 2,000 entries (lines past 65,535, where libxml2 stops counting) with 1%
    broken, and their assessment references, read by two workers in pieces of the size the
    import uses, as the whole-file reader reads them."""
    entries, references, _gss = demo_files
    broken, positions = entries.broken(100)
    document = broken.document()
    assert document.count(b"\n") > 70_000
    expected = whole_file(document)
    read = in_pieces(tmp_path / "entries.xml", document, 2, split.PIECE_BYTES)
    assert read == expected
    assert [number for number, _line, item in read[0] if isinstance(item, tuple)] == positions
    assert len(list(split.pieces(document, "entries"))) > 5
    assessments = references.document()
    assert in_pieces(tmp_path / "references.xml", assessments, 2, 20_000,
                     "assessments") == whole_file(assessments, "assessments")


READ_WITHOUT_FLASK = textwrap.dedent("""
    import sys
    sys.modules["flask"] = None  # importing Flask now fails
    from adapter.directory.split import pieces, read_piece

    data = open(sys.argv[1], "rb").read()
    print(sum(len(read_piece(piece).records) for piece in pieces(data, "entries", 6000)))
""")


def test_a_worker_reads_pieces_without_flask(document: bytes, tmp_path: Path) -> None:
    """What a worker process runs imports no Flask (and opens no database)."""
    path = tmp_path / "file.xml"
    path.write_bytes(document)
    done = subprocess.run([sys.executable, "-c", READ_WITHOUT_FLASK, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "30"


# --- the import command: one worker and two -------------------------------------------------

def directory_content(app: Flask) -> tuple[list[Any], dict[str, int], int]:
    """Return every stored entry (canonical, without version metadata), the audit records
    per action and the number of outbox events."""
    with app.extensions["db"].sessions() as session:
        entries = [canonical_dump(child, meta=False) for child in session.scalars(
            child_query().order_by(Child.contactpoint_id)).unique()]
        audit = {action: int(number) for action, number in session.execute(select(
            AuditRecord.action, func.count()).group_by(AuditRecord.action))}
        events = int(session.scalar(select(func.count()).select_from(Event)) or 0)
    return entries, audit, events


def edited_batch(demo_files: Files, name: str) -> bytes:
    """Return 120 demo entries with the edit ``name`` made."""
    entries = demo_files[0]
    edits: dict[str, Callable[[], bytes]] = {
        "broken records": lambda: entries.broken(10)[0].document(120),
        "records across the piece size": lambda: joined_lines(30, 40)(entries.document(120)),
        "a comment, then an element that is not a record": lambda: insert_at(
            50, b"<!-- -->\n")(insert_at(20, b"<Unexpected/>\n")(entries.document(120))),
        "malformed": lambda: replaced(rb"</Gender>", b"</Gendr>", 90)(entries.document(120)),
        "no records": lambda: entries.document(0),
        "an empty file": lambda: b"",
    }
    return edits[name]()


@pytest.mark.parametrize(("name", "exit_code"), [
    ("broken records", 1), ("records across the piece size", 0),
    ("a comment, then an element that is not a record", 1), ("malformed", 2),
    ("no records", 0), ("an empty file", 2)])
def test_one_worker_and_two_import_the_same(app: Flask, target: Flask, demo_files: Files,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            name: str, exit_code: int) -> None:
    """The same file imported with ``--workers 1`` and ``--workers 2`` (pieces of about six
    entries) gives the same report and the same directory; imported again, it changes
    nothing."""
    monkeypatch.setattr(split, "PIECE_BYTES", 40_000)
    path = tmp_path / "entries.xml"
    path.write_bytes(edited_batch(demo_files, name))
    one = invoke(app, "import", str(path), "--quiet", "--workers", "1")
    two = invoke(target, "import", str(path), "--quiet", "--workers", "2")
    assert one.exit_code == exit_code, one.output
    assert (two.exit_code, two.output) == (one.exit_code, one.output)
    assert directory_content(app) == directory_content(target)
    if exit_code == 2:
        assert "unusable: " + ("Malformed XML at line " if name == "malformed"
                               else "neither XML nor JSON") in one.output
        return
    again = invoke(target, "import", str(path), "--quiet", "--workers", "2")
    assert again.exit_code == exit_code, again.output
    assert "0 created, 0 updated" in again.output
    assert directory_content(target) == directory_content(app)
