"""Directory XML batch files for import tests: demo entries written by the gateway's own export
from a scratch SQLite database, cut into documents of any length, with records broken on
purpose (1% or as asked), and the lines each record starts on."""

from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import select, update

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.directory.writer import write_assessments_data, write_entries_data
from adapter.models import Assessment, Child, Organisation
from adapter.models.canonical import canonical_assessment_dump, canonical_dump
from adapter.store.children import child_query
from adapter.wellformed import today_in_england

RECORD_RE: Final = re.compile(rb"<(DirectoryEntry|AssessmentReference)[ >].*?</\1>\n", re.DOTALL)
# Ways to break a record, in turn: each leaves the document well-formed.
BREAKERS: Final = (
    (re.compile(rb"<BirthDate>\d{4}-\d\d-\d\d</BirthDate>"), b"<BirthDate>2015-02-30</BirthDate>",
     "BirthDate"),
    (re.compile(rb"<Gender>[^<]*</Gender>"), b"<Gender>Q</Gender>", "Gender"),
    (re.compile(rb"<RecordStatus>"), b"<Unexpected/><RecordStatus>", "Unexpected"),
    (re.compile(rb"<ContactPointId>CP([^<]{8})[^<]</ContactPointId>"),
     rb"<ContactPointId>CP\g<1>!</ContactPointId>", "ContactPointId"),
)


@dataclass
class Batch:
    """A batch document cut into its head, its records and its tail."""

    head: bytes
    records: list[bytes]
    tail: bytes

    @classmethod
    def of(cls, document: bytes) -> Batch:
        """Cut a batch document written by the gateway into its parts."""
        found = list(RECORD_RE.finditer(document))
        if not found:
            end = document.rindex(b"</")
            return cls(document[:end], [], document[end:])
        return cls(document[:found[0].start()], [m.group(0) for m in found],
                   document[found[-1].end():])

    def document(self, count: int | None = None) -> bytes:
        """Return the document with its first ``count`` records (all by default)."""
        return self.head + b"".join(self.records[:count]) + self.tail

    def live(self) -> Batch:
        """Return a copy with the live entries only (archived ones are invisible to ordinary
        callers, docs/domain.md "Retention")."""
        return dataclasses.replace(self, records=[
            r for r in self.records if b"<RecordStatus>archived</RecordStatus>" not in r])

    def lines(self) -> list[int]:
        """Return the line each record starts on."""
        line = self.head.count(b"\n") + 1
        starts = []
        for record in self.records:
            starts.append(line)
            line += record.count(b"\n")
        return starts

    def broken(self, every: int = 100) -> tuple[Batch, list[int]]:
        """Return a copy with every ``every``-th record broken (1-based positions broken)."""
        records, positions = list(self.records), []
        for index in range(every - 1, len(records), every):
            pattern, replacement, _name = BREAKERS[len(positions) % len(BREAKERS)]
            records[index], count = pattern.subn(replacement, records[index], count=1)
            assert count == 1
            positions.append(index + 1)
        return dataclasses.replace(self, records=records), positions


def archive_aged_out(db: Database) -> None:
    """Archive the demo entries whose retention has ended since the demo's reference date, as
    the retention rules would have by today (docs/domain.md "Retention"): an import refuses a
    live entry for a person outside the directory's age rules."""
    with db.write_transaction() as session:
        session.execute(update(Child).where(
            Child.record_status == "live", Child.retention_date <= today_in_england(),
        ).values(record_status="archived"))


def demo_batches(folder: Path, children: int, seed: int = 5) -> tuple[Batch, Batch, str]:
    """Return every entry and assessment reference of demo data for one authority, written
    whole (no disclosure policy: the test data of a system that holds them all) by the
    directory writer from a scratch SQLite database, and the authority's GSS code."""
    db = Database(f"sqlite:///{folder / 'source.db'}")
    db.upgrade()
    load_demo_data(db, children=children, authorities=1, seed=seed, progress=False)
    archive_aged_out(db)
    entries, references = io.BytesIO(), io.BytesIO()
    with db.sessions() as session:
        gss = session.scalar(select(Organisation.gss_code).where(
            Organisation.type == "local-authority"))
        write_entries_data((canonical_dump(child) for child in session.scalars(
            child_query().order_by(Child.id)).unique()), entries)
        write_assessments_data((canonical_assessment_dump(a) for a in session.scalars(
            select(Assessment).order_by(Assessment.id))), references)
    db.dispose()
    assert gss is not None
    return Batch.of(entries.getvalue()), Batch.of(references.getvalue()), gss
