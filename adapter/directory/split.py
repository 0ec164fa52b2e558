"""A directory XML batch file read in pieces, split at record boundaries, so that worker
processes can parse and validate the pieces while the importing process applies what they
read (``contactpoint-gateway import --workers``, README "Directory XML and bulk import").

The parent does not parse the file: it scans its bytes for the record element's start and
end tags (``<DirectoryEntry``, ``</DirectoryEntry>``, or the assessment reference's) and cuts
only where it can prove that the cut falls between two records that are children of the root:

- the file starts with the prolog (an XML declaration at most) and the root start tag in the
  directory namespace as its default namespace, and what lies between the root start tag and
  the first record is balanced markup (the header);
- from there, record start and end tags alternate, and what separates a record's end tag from
  the next record's start tag is XML white space holding a line break: the cut is made after
  that line break, so that each piece starts a line and keeps its columns;
- no comment, CDATA section, processing instruction or declaration (``<!``, ``<?``) lies on
  the way (markup could hide in it; no other ``<`` can stand in text or attribute values:
  XML 1.0 section 2.4 and production [10] AttValue).

At the first place where one of these does not hold, the scan stops cutting: the rest of the
file is one piece, read as it always was (a record that is not where a record belongs is then
rejected on its own, as the whole-file reader rejects it; a file the scan cannot place at all
is one piece, the whole document). Each piece is a whole document: the first piece is the
file's start with the root's end tag added; a later piece is the file's prolog and root start
tag (the same namespaces and encoding), a line break, the piece's records and the root's end
tag (the last piece: the file's end, whatever it holds). Its records are read by the reader
of the whole file (``adapter.directory.reader.iter_piece_data``); their numbers are moved by
the records of the pieces before it and their lines by the lines before it, so that every
record has the number and line the whole-file reader gives it. A malformed piece reports the
file's line and column; the records of its part of the file before the error are applied as
far as lxml handed them out (it reads a document in blocks). The pieces do not depend on the
number of workers, so one worker or several give the same report.

Pieces are read in worker processes started by ``fork``: under ``spawn`` (and
``forkserver``) each worker would first run the command's main script again
(``multiprocessing.spawn.prepare``), which loads the web application. A worker only runs
``read_piece``, whose module imports no Flask, and touches no database (it parses bytes;
tests/directory/test_split.py reads pieces in a process where Flask cannot be imported). The
workers run below the importing process's priority (``WORKER_NICENESS``), their garbage
collector kept off the objects they inherit (``_start_worker``). With one worker
the pieces are read in the importing process, without a pool.
"""

from __future__ import annotations

import gc
import io
import mmap
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapter.directory.reader import iter_piece_data
from adapter.directory.schema import NS
from adapter.errors import BadRequest
from adapter.models.canonical import Canonical

# A piece covers at least this much of the file (about 170 directory entries of 6 KB): large
# enough that sending it to a worker and its records back costs little beside reading them.
PIECE_BYTES: Final = 1 << 20
# How many pieces each worker may have waiting or read ahead of the importing process.
AHEAD: Final = 2
# The workers' niceness above the importing process's: the importing process, which applies
# every record, is the stage the import waits for; on a busy machine the workers must not
# take its share of the cores (they only need to stay a few pieces ahead).
WORKER_NICENESS: Final = 5
# The markup between the root start tag and the first record (the header) is checked tag by
# tag; past this size the scan does not cut at all.
HEAD_LIMIT: Final = 1 << 20
ROOTS: Final = {"entries": (b"DirectoryEntries", b"DirectoryEntry"),
                "assessments": (b"AssessmentReferences", b"AssessmentReference")}
_NAME: Final = rb"[^\s=/<>\"']+"
_ATTRIBUTES: Final = rb"(?:\s+" + _NAME + rb"\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*\s*"
_TAG: Final = re.compile(rb"<(/?)" + _NAME + _ATTRIBUTES + rb"(/?)>")
_WHITE: Final = re.compile(rb"[ \t\r\n]*")
_END_TAG_REST: Final = re.compile(rb"[ \t\r\n]*>")
# What may follow a start tag's name (``\s`` of a bytes pattern, ``/``, ``>``).
_NAME_ENDS: Final = frozenset(bytes([c]) for c in b" \t\n\r\x0b\x0c/>")
_DEFAULT_NS: Final = re.compile(rb"""\sxmlns\s*=\s*(["'])""" + re.escape(NS.encode()) + rb"\1")
_LINE_IN_MESSAGE: Final = re.compile(r"\bline (\d+)")
MALFORMED: Final = "Malformed XML at line "


@dataclass(frozen=True)
class Piece:
    """One piece of a batch file: a whole document holding some of its records."""

    kind: str
    data: bytes
    # Added to a line of ``data`` from ``first_line`` on (the piece's own bytes, after the
    # copied prolog and root start tag) to give the line in the file.
    line_offset: int
    first_line: int
    # A later piece: its records follow the header read with the first piece.
    continuation: bool
    # How many bytes of the file it covers (for a progress bar).
    size: int


@dataclass
class Refused:
    """A record the reader refused, as the import needs it (``RefusedRecord``): a plain value
    that crosses between processes (``RecordInvalid`` is an exception built from another)."""

    message: str
    expression: str | None
    contactpoint_id: str | None


ReadRecord = tuple[int, int | None, Canonical | Refused]


@dataclass(frozen=True)
class PieceRead:
    """What a worker read from a piece: its records in order (numbered from 1, lines of the
    file), and the message of the error that ended it, if the piece stopped being readable."""

    records: list[ReadRecord]
    error: str | None = None
    expression: str | None = None


class _Scan:
    """Finds the cuts of one file (see the module docstring), lazily, in file order."""

    def __init__(self, data: mmap.mmap | bytes, kind: str, piece_bytes: int) -> None:
        root, record = ROOTS[kind]
        self.data, self.piece_bytes = data, piece_bytes
        self.head = re.compile(rb"(?:\xef\xbb\xbf)?(?:<\?xml[^>]*\?>)?[ \t\r\n]*<" + root
                               + rb"(?=[\s>])(" + _ATTRIBUTES + rb")>")
        self.record = record
        self.close = b"</" + root + b">"

    def prefix(self) -> bytes | None:
        """Return the prolog and root start tag a later piece starts with, or None when the
        file does not start as the scan requires."""
        found = self.head.match(self.data)
        if found is None or not _DEFAULT_NS.search(found.group(1)):
            return None
        return bytes(self.data[:found.end()])

    def cuts(self, start: int) -> Iterator[int]:
        """Yield where later pieces start, from the end of the root start tag ``start``."""
        records = self.record_tags(start)
        first = next(records, None)
        if first is None or first[2] or first[0] - start > HEAD_LIMIT \
                or not _balanced(bytes(self.data[start:first[0]])):
            return
        last_cut, end, in_record = 0, 0, True
        for begin, finish, closing in records:
            if closing != in_record:
                return
            in_record = not closing
            if closing:
                end = finish
                continue
            gap = self.data[end:begin]
            if _WHITE.fullmatch(gap) is None:
                return
            line_break = gap.rfind(b"\n")
            if line_break >= 0 and end + line_break + 1 - last_cut >= self.piece_bytes:
                last_cut = end + line_break + 1
                yield last_cut

    def record_tags(self, position: int) -> Iterator[tuple[int, int, bool]]:
        """Yield ``(start, end, closing)`` of each record start tag (up to the end of its name)
        and end tag from ``position`` on, in file order; stop at the first ``<!`` or ``<?``.

        The record's name is looked for with ``find`` rather than a regular expression tried
        at every ``<``: a record holds some 300 elements, and the scan runs in the importing
        process, beside the apply (``_read_by_workers``)."""
        data, name = self.data, self.record
        checked = position
        while (at := data.find(name, position)) >= 0:
            position = at + len(name)
            tag = self._record_tag(at, position)
            if tag is None:
                continue
            if _markup_in(data, checked, tag[0]):
                return
            checked = tag[0]
            yield tag

    def _record_tag(self, at: int, after: int) -> tuple[int, int, bool] | None:
        """Return the record start or end tag whose name is at ``at`` (ending at ``after``),
        or None when the name stands elsewhere (in a longer name, in text)."""
        if self.data[at - 1:at] == b"<":
            return (at - 1, after, False) if self.data[after:after + 1] in _NAME_ENDS else None
        if self.data[at - 2:at] == b"</":
            close = _END_TAG_REST.match(self.data, after)
            return None if close is None else (at - 2, close.end(), True)
        return None


def _markup_in(data: mmap.mmap | bytes, start: int, end: int) -> bool:
    """Return True when a ``<!`` or ``<?`` starts in ``data[start:end]``. The ``!`` and ``?``
    are looked for, then the ``<`` before them: they are rare in a batch file, while a search
    for ``<!`` would stop at the ``<`` of every tag."""
    for mark in (b"!", b"?"):
        found = data.find(mark, start + 1, end + 1)
        while found >= 0:
            if data[found - 1:found] == b"<":
                return True
            found = data.find(mark, found + 1, end + 1)
    return False


def _balanced(markup: bytes) -> bool:
    """Return True when ``markup`` is whole elements: every ``<`` starts a tag, and the tags
    close what they open."""
    depth, position = 0, 0
    while (start := markup.find(b"<", position)) >= 0:
        tag = _TAG.match(markup, start)
        if tag is None:
            return False
        if tag.group(1):
            depth -= 1
            if depth < 0:
                return False
        elif not tag.group(2):
            depth += 1
        position = tag.end()
    return depth == 0


def pieces(data: mmap.mmap | bytes, kind: str, piece_bytes: int = PIECE_BYTES,
           ) -> Generator[Piece, None, None]:
    """Yield the pieces of a batch file's bytes, in file order (one piece, the whole file,
    when it cannot be cut)."""
    scan = _Scan(data, kind, piece_bytes)
    prefix = scan.prefix()
    cuts = scan.cuts(len(prefix)) if prefix is not None else iter(())
    start, lines_before = 0, 0
    for cut in cuts:
        part = bytes(data[start:cut])
        _drop_pages(data, start, cut)
        yield _piece(kind, prefix, part + scan.close, start, lines_before, len(part))
        start, lines_before = cut, lines_before + _line_breaks(part)
    part = bytes(data[start:])
    yield _piece(kind, prefix, part, start, lines_before, len(part))


def _drop_pages(data: mmap.mmap | bytes, start: int, end: int) -> None:
    """Let the pages of the mapped file between ``start`` and ``end`` go (the scan has
    passed them and the piece is a copy): the process's memory stays flat however large the
    file, as the whole-file reader's does (the operating system's file cache keeps them)."""
    if isinstance(data, mmap.mmap):
        first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # pages wholly inside the range
        last = end // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            data.madvise(mmap.MADV_DONTNEED, first, last - first)


def _line_breaks(part: bytes) -> int:
    """Return how many lines ``part`` ends as libxml2 numbers lines: by line feeds (a
    carriage return alone, a line break in XML 1.0 section 2.11, does not move libxml2's
    line number; tests/directory/test_split.py reads such a file)."""
    return part.count(b"\n")


def _piece(kind: str, prefix: bytes | None, part: bytes, start: int, lines_before: int,
           size: int) -> Piece:
    """Return the piece of ``part``: the file's bytes from ``start`` (on the line after
    ``lines_before`` line breaks), closed if need be."""
    if start == 0 or prefix is None:
        return Piece(kind, part, 0, 1, False, size)
    first_line = _line_breaks(prefix) + 2  # the piece's bytes follow the prefix's line
    return Piece(kind, prefix + b"\n" + part, lines_before + 1 - first_line, first_line, True,
                 size)


def read_piece(piece: Piece) -> PieceRead:
    """Parse, validate and read the records of one piece (in a worker process)."""
    records: list[ReadRecord] = []
    offset = piece.line_offset
    try:
        for number, line, item in iter_piece_data(piece.kind, io.BytesIO(piece.data),
                                                  continuation=piece.continuation):
            read: Canonical | Refused = item if isinstance(item, dict) else Refused(
                item.message, item.expression, item.contactpoint_id)
            records.append((number, None if line is None else line + offset, read))
    except BadRequest as error:
        return PieceRead(records, _in_file(error.message, piece), error.expression)
    return PieceRead(records)


def _in_file(message: str, piece: Piece) -> str:
    """Return a malformed piece's message with its lines (where the error is, and the lines
    libxml2 names in its reason) made the file's: those of the copied prolog and root start
    tag are the file's already."""
    if not piece.line_offset or not message.startswith(MALFORMED):
        return message

    def moved(found: re.Match[str]) -> str:
        line = int(found.group(1))
        return f"line {line + piece.line_offset if line >= piece.first_line else line}"
    return _LINE_IN_MESSAGE.sub(moved, message)


def _start_worker() -> None:
    """Give a worker process a lower priority than the importing process's, and keep its
    garbage collector off what it inherited from the importing process.

    A forked worker holds a copy of the importing process's objects (the application's
    modules, the mapper, the schema: over a hundred thousand); a full collection, which the
    records a worker reads set off, would go through every one of them, and write to each,
    which copies their pages. They are the importing process's to collect: ``gc.freeze``
    leaves them out of every collection here (the Python library reference, ``gc.freeze``,
    on a process that forks without exec)."""
    os.nice(WORKER_NICENESS)
    gc.freeze()


def _read_in_process(parts: Iterator[Piece]) -> Generator[tuple[Piece, PieceRead], None, None]:
    """Read the pieces one after the other in this process."""
    for piece in parts:
        yield piece, read_piece(piece)


def _read_by_workers(parts: Iterator[Piece], workers: int,
                     ) -> Generator[tuple[Piece, PieceRead], None, None]:
    """Read the pieces in ``workers`` processes, a few ahead; hand them back in file order."""
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker) as pool:
        waiting: deque[tuple[Piece, Future[PieceRead]]] = deque()
        try:
            for piece in parts:
                waiting.append((piece, pool.submit(read_piece, piece)))
                if len(waiting) > AHEAD * workers:
                    piece, future = waiting.popleft()
                    yield piece, future.result()
            while waiting:
                piece, future = waiting.popleft()
                yield piece, future.result()
        finally:
            for _piece_left, future in waiting:
                future.cancel()


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap | bytes]:
    """Map the file into memory (an empty file cannot be mapped: its bytes are empty)."""
    with open(path, "rb") as stream:
        if not path.stat().st_size:
            yield b""
            return
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


def read_batch_file(path: Path, kind: str, workers: int,
                    advance: Callable[[int], object] | None = None,
                    piece_bytes: int | None = None) -> Iterator[ReadRecord]:
    """Yield ``(record number, line, canonical dict or Refused)`` for each record of a batch
    file (``kind`` "entries" or "assessments"), in file order, exactly as
    ``adapter.directory.reader.iter_entry_data`` numbers and places them; the pieces are read
    by ``workers`` processes (1: in this process). ``advance`` is told the bytes of each piece
    handed on; a piece covers ``piece_bytes`` of the file at least (``PIECE_BYTES``).

    :raises BadRequest: the file stops being a readable batch (the records before that point
        have been yielded).
    """
    with _mapped(path) as data:
        parts = pieces(data, kind, piece_bytes or PIECE_BYTES)
        read = _read_in_process(parts) if workers <= 1 else _read_by_workers(parts, workers)
        try:
            yield from _numbered(read, advance)
        finally:
            # The scan's matches hold the mapping until its generators are closed.
            read.close()
            parts.close()


def _numbered(read: Iterator[tuple[Piece, PieceRead]], advance: Callable[[int], object] | None,
              ) -> Iterator[ReadRecord]:
    """Yield the records of the pieces read, numbered in the file.

    :raises BadRequest: a piece stopped being readable (after its records before it).
    """
    before = 0
    for piece, done in read:
        for number, line, item in done.records:
            yield before + number, line, item
        before += len(done.records)
        if advance is not None:
            advance(piece.size)
        if done.error is not None:
            raise BadRequest(done.error, expression=done.expression)
