"""An authority's children as FHIR NDJSON files (the ``export --format fhir-ndjson`` command):
the resources the bulk ``$export`` writes for each child, built with its functions
(``adapter.export.resources``: the disclosure policy first, then the mappings) and written with
its NDJSON files (``adapter.export.files``: one file per type, lines counted); then the
Organizations and Practitioners they refer to. Children are read in keyset pages on their
internal id, each page with its ``export`` audit records in one transaction, its lines written
once it committed, so memory stays flat (FHIR Bulk Data Access IG v2, export.html)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from adapter.db import Database
from adapter.export.files import NdjsonFiles, ndjson_line
from adapter.export.resources import (
    CHILD_TYPES,
    REFERENCED_TYPES,
    assessment_resources,
    child_resources,
    references,
)
from adapter.fhir.bundle import renderable
from adapter.mapping import fhir as mapping
from adapter.models import Assessment, Child, Organisation, Practitioner
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import disclose_child, visible_to
from adapter.store.children import child_query
from adapter.wellformed import Unrenderable, require_renderable

PAGE: Final = 500
Lines = defaultdict[str, list[bytes]]


class NdjsonExport:
    """Writes one authority's NDJSON files for one caller."""

    def __init__(self, db: Database, authority_id: int, caller: Caller, base: str,
                 on_child: Callable[[int], object] | None = None) -> None:
        self.db, self.authority_id, self.caller, self.base = db, authority_id, caller, base
        self.on_child = on_child or (lambda _n: None)
        self.references: set[str] = set()
        # Records left out because they cannot be rendered (``Type/id``; logged for operators).
        self.skipped: list[str] = []

    def run(self, folder: Path) -> dict[str, int]:
        """Write the files into ``folder``; return the lines written per type.

        :raises FileExistsError: a file of the export is already there.
        """
        files = NdjsonFiles(folder)
        try:
            after = 0
            while (page := self._page(after)) is not None:
                after, lines = page
                for resource_type, batch in lines.items():
                    files.write(resource_type, batch)
            for resource_type in REFERENCED_TYPES:
                self._referenced(files, resource_type)
        finally:
            files.close()
        return dict(files.counts)

    def _page(self, after: int) -> tuple[int, Lines] | None:
        """Read, disclose, map and audit the next page of children; None after the last."""
        with self.db.write_transaction() as session:
            children = list(session.scalars(child_query().where(
                Child.managing_organisation_id == self.authority_id, visible_to(self.caller),
                Child.id > after).order_by(Child.id).limit(PAGE)).unique())
            if not children:
                return None
            assessments = assessments_by_child(session, [child.id for child in children])
            lines: Lines = defaultdict(list)
            for child in children:
                self._child(session, child, assessments.get(child.id, []), lines)
        self.on_child(len(children))
        return children[-1].id, lines

    def _child(self, session: Session, child: Child, assessments: list[Assessment],
               lines: Lines) -> None:
        """Add one child's resources (and its assessment references') and audit the export."""
        disclosure = disclose_child(child, self.caller)
        resources = list(child_resources(session, child, self.caller, CHILD_TYPES))
        for assessment in assessments:
            resources.extend(assessment_resources(session, assessment, self.caller,
                                                  CHILD_TYPES))
        try:
            for resource in resources:
                require_renderable(resource)
        except Unrenderable:  # one bad record must not stop (or truncate) the export
            self.skipped.append(f"Patient/{child.resource_id}")
            return
        for resource in resources:
            references(resource, self.references)
            lines[resource["resourceType"]].append(ndjson_line(resource))
        audit.record(session, "export", resource_type="Patient", resource_id=child.resource_id,
                     child_ref=child.resource_id, override=disclosure.override,
                     caller=self.caller, detail="export command (fhir-ndjson)")
        ledger.record_delivery(session, self.caller, child, "export")  # (--as a client)

    def _referenced(self, files: NdjsonFiles, resource_type: str) -> None:
        """Write the organisations or practitioners the written resources refer to."""
        prefix = f"{resource_type}/"
        ids = sorted(ref[len(prefix):] for ref in self.references if ref.startswith(prefix))
        model: Any = Organisation if resource_type == "Organization" else Practitioner
        render = mapping.organisation_to_fhir if model is Organisation \
            else mapping.practitioner_to_fhir
        for start in range(0, len(ids), PAGE):
            with self.db.transaction() as session:
                rows = session.scalars(select(model).where(
                    model.resource_id.in_(ids[start:start + PAGE])).order_by(model.resource_id))
                withheld: list[Unrenderable] = []
                batch = [ndjson_line(resource) for resource in
                         renderable([render(row, base=self.base) for row in rows], withheld)]
            files.write(resource_type, batch)
            self.skipped += [error.label for error in withheld]


def assessments_by_child(session: Session, child_ids: list[int]) -> dict[int, list[Assessment]]:
    """Return the assessment references of the given children, by child."""
    found: defaultdict[int, list[Assessment]] = defaultdict(list)
    query = select(Assessment).where(Assessment.child_id.in_(child_ids)) \
        .options(selectinload(Assessment.members)).order_by(Assessment.id)
    for assessment in session.scalars(query).unique():
        found[assessment.child_id].append(assessment)
    return found
