"""An authority's children as FHIR NDJSON files (the ``export --format fhir-ndjson`` command):
the one NDJSON exporter (``adapter.export.exporter.NdjsonExporter``, which the bulk ``$export``
runs too) over the children of one authority, with the Organizations and Practitioners they
refer to, one file per type. A child or a referenced record that cannot be rendered is left
out and named in ``skipped`` (the command reports them and exits 1) rather than written to an
error file: the command's files hold resources only (FHIR Bulk Data Access IG v2,
export.html)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from adapter.db import Database
from adapter.export.exporter import NdjsonExporter
from adapter.export.files import NdjsonFiles
from adapter.export.resources import CHILD_TYPES, REFERENCED_TYPES, ChildExport
from adapter.models import Child
from adapter.models.rows import ChildRow
from adapter.security import ledger
from adapter.security.caller import Caller
from adapter.wellformed import Unrenderable

COMMAND_TYPES = CHILD_TYPES | frozenset(REFERENCED_TYPES)


class NdjsonExport(NdjsonExporter):
    """Writes one authority's NDJSON files for one caller."""

    def __init__(self, db: Database, authority_id: int, caller: Caller,
                 on_child: Callable[[int], object] | None = None) -> None:
        super().__init__(db, caller, COMMAND_TYPES, group=True)
        self.authority_id = authority_id
        self.on_child = on_child or (lambda _n: None)
        # Records left out because they cannot be rendered (``Type/id``; logged for operators).
        self.skipped: list[str] = []
        self.name = "export command"

    def run(self, folder: Path) -> dict[str, int]:
        """Write the files into ``folder``; return the lines written per type.

        :raises FileExistsError: a file of the export is already there.
        """
        files = NdjsonFiles(folder)
        try:
            self.export(files)
        finally:
            files.close()
        return dict(files.counts)

    def _conditions(self) -> list[Any]:
        """Return the conditions selecting the authority's children the caller may see."""
        return [*super()._conditions(), Child.managing_organisation_id == self.authority_id]

    def _beat(self, phase: str, scanned: int = 0,
              batch: Iterable[ChildExport] = ()) -> None:
        """Commit the batch's audit records, then move the progress bar."""
        super()._beat(phase, scanned, batch)
        if scanned:
            self.on_child(scanned)

    def _detail(self) -> str:
        """Return the ``detail`` of the command's audit records."""
        return "export command (fhir-ndjson)"

    def _delivered(self, session: Session, child_refs: list[str]) -> None:
        """Record the deliveries to a client the command acts as (``--as``); the command's
        own operator identity holds no copy (``adapter.security.ledger.NOT_A_HOLDER``)."""
        if self.caller.client_id not in ledger.NOT_A_HOLDER:
            super()._delivered(session, child_refs)

    def _failed(self, item: ChildExport, child: Child | ChildRow, exc: Exception) -> None:
        """Leave out a child that cannot be rendered, naming it in ``skipped``.

        :raises Exception: ``exc``, anything else (a fault, not a record to correct).
        """
        if not isinstance(exc, Unrenderable):
            raise exc
        self.skipped.append(f"Patient/{child.resource_id}")
        item.lines, item.override = [], False

    def _withheld(self, files: NdjsonFiles, withheld: list[Unrenderable]) -> None:
        """Name the organisations or practitioners that cannot be rendered in ``skipped``."""
        self.skipped += [error.label for error in withheld]
