"""The one NDJSON exporter (``NdjsonExporter``), and running one export job with it (``Exporter``;
the ``export --format fhir-ndjson`` command is the other caller:
``adapter.export.ndjson_command``). A job: the children in scope are streamed in batches with
keyset paging on their internal id (never the whole table in memory), each rendered for the
job's client as its REST reads would render it (the one disclosure policy), their lines written
to the job's NDJSON files, one ``export`` audit record per exported child committed per batch
with the job's progress (FHIR Bulk Data Access IG v2, export.html). Then Organization and
Practitioner: at system level all of them (the directory of services and staff, readable by
every client), streamed the same way; at Patient and Group level (the patient compartments:
export.html "_type" lets such an export add resources outside the compartment that help to
interpret it) those the written resources refer to, kept as a set of ids while the children are
streamed (it grows with the organisations and practitioners, not with the children).
A Patient-level export has every child the client may see, a Group-level one an authority's;
the POST ``patient`` parameter restricts either to the Patients it names.

A resource changed while its export runs is written in its newer state: export.html
"transactionTime" says the output SHOULD NOT include resources modified after it, but SHALL
include those modified up to it; the next export with ``_since=transactionTime`` has it again.
Runs inside an application context (the mappings read the canonical base from it)."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, selectinload

from adapter.db import Database
from adapter.errors import issue, operation_outcome
from adapter.export.files import OUTCOME, NdjsonFiles, ndjson_line
from adapter.export.jobs import ExportSettings
from adapter.export.resources import (
    CHILD_TYPES,
    REFERENCED_TYPES,
    ChildExport,
    Resource,
    assessment_resources,
    child_resources,
    references,
)
from adapter.export.sources import ExportSource
from adapter.fhir.bundle import renderable, withheld_outcome
from adapter.http import current_settings
from adapter.models import Assessment, Child, ExportJob
from adapter.models.base import utcnow
from adapter.models.canonical import as_utc
from adapter.models.export import RUNNING_STATES
from adapter.models.rows import ChildRow
from adapter.registry import attribute, referenced_types, spec_of
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import disclose_child, visible_to
from adapter.store.children import child_query
from adapter.store.rows import entries_rows
from adapter.wellformed import Unrenderable, require_renderable

log = logging.getLogger(__name__)
BATCH_SIZE: Final = 500
# An export of these types alone reads its children as light records (adapter/store/rows.py).
PATIENTS_ONLY: Final = frozenset({"Patient"})
BREAK_GLASS: Final = ("{n} shielded children were exported using the shielding right: each "
                      "access is recorded as an override and will be reviewed.")


class JobGone(Exception):
    """The job was deleted, or failed by a status request, while it ran."""


@dataclass(frozen=True)
class JobSpec:
    """What one job exports (read from its row when it is started)."""

    job_id: str
    types: frozenset[str]
    since: dt.datetime | None
    authority_id: int | None
    notes: list[dict[str, Any]]
    level: str = "system"
    # The logical ids the ``patient`` parameter restricted the export to (None: no restriction).
    patients: tuple[str, ...] | None = None

    @classmethod
    def of(cls, job: ExportJob) -> JobSpec:
        """Return the spec of a stored job."""
        return cls(job.job_id, frozenset(job.types), as_utc(job.since), job.authority_id,
                   list(job.notes), job.level,
                   tuple(job.patients) if job.patients is not None else None)


class NdjsonExporter:
    """The one NDJSON exporter: the children in scope in keyset batches, each rendered for
    ``caller`` as its REST reads would render it, their lines written to ``files`` once the
    batch's ``export`` audit records are committed; then the Organizations and Practitioners
    (those the written resources refer to, or all of them). The bulk ``$export`` job
    (``Exporter``) and the ``export --format fhir-ndjson`` command
    (``adapter.export.ndjson_command``) differ only in the hooks below: where progress and
    audit records are committed, and what becomes of a child that cannot be exported."""

    def __init__(self, db: Database, caller: Caller, types: frozenset[str], *,
                 group: bool, since: dt.datetime | None = None) -> None:
        self.db, self.caller, self.types, self.since = db, caller, types, since
        # Patient and Group level: the organisations and practitioners exported are those the
        # children's resources refer to, so every child resource is mapped then; else only
        # the asked ones.
        self.group = group
        self.need_references = self.group and any(t in types for t in REFERENCED_TYPES)
        self.mapped = CHILD_TYPES if self.need_references else CHILD_TYPES & types
        self.references: set[str] = set()
        self.overrides = 0
        self.name = "export"  # how the log names the export
        # The canonical base the resources are rendered under: the app's (a job and the
        # export command both run in its application context).
        self.base = current_settings().canonical_base

    def export(self, files: NdjsonFiles) -> None:
        """Write the children in scope, then the organisations and practitioners asked for."""
        self._export_children(files)
        for resource_type in referenced_types():
            if resource_type in self.types:
                self._export_directory(files, resource_type)

    # --- hooks --------------------------------------------------------------------------

    def _conditions(self) -> list[Any]:
        """Return the conditions selecting the children in scope."""
        return [visible_to(self.caller)]

    def _beat(self, phase: str, scanned: int = 0,
              batch: Iterable[ChildExport] = ()) -> None:
        """Commit the audit records of a batch of children (and progress, for a job)."""
        items = list(batch)
        if items:
            with self.db.write_transaction() as session:
                self._record_exported(session, items)

    def _detail(self) -> str:
        """Return the ``detail`` of the export's audit records."""
        return "export"

    def _record_exported(self, session: Session, batch: Iterable[ChildExport]) -> None:
        """Write one ``export`` audit record per child whose data the files receive (the
        delivery ledger is fed from the same point)."""
        for item in batch:
            if item.exported:
                audit.record(session, "export", resource_type="Patient",
                             resource_id=item.child_ref, child_ref=item.child_ref,
                             override=item.override, caller=self.caller, detail=self._detail())
                self.overrides += item.override
        # The files hand these children's data to the client: the delivery ledger scopes its
        # purge instruction at switch-off (adapter.security.ledger).
        self._delivered(session, [item.child_ref for item in batch if item.exported])

    def _delivered(self, session: Session, child_refs: list[str]) -> None:
        """Record in the delivery ledger that the caller received these children's data."""
        ledger.record_deliveries(session, self.caller.client_id, child_refs, "export")

    def _failed(self, item: ChildExport, child: Child | ChildRow, exc: Exception) -> None:
        """Turn a child that cannot be exported into an OperationOutcome line of the error
        file (export.html "Response - Complete Status": partial success is reported in
        ``error``)."""
        reason = exc.message if isinstance(exc, Unrenderable) else type(exc).__name__
        message = (f"Patient/{child.resource_id} and the resources of its entry could not "
                   f"be exported ({reason}); everything else was.")
        failed = operation_outcome([issue("error", "exception", message)])
        item.lines, item.override = [(OUTCOME, ndjson_line(failed))], False

    def _withheld(self, files: NdjsonFiles, withheld: list[Unrenderable]) -> None:
        """Report organisations or practitioners that cannot be rendered in the error file,
        as a child that cannot be exported is."""
        files.write(OUTCOME, [ndjson_line(withheld_outcome(withheld))])

    # --- children ---------------------------------------------------------------------

    def _export_children(self, files: NdjsonFiles) -> None:
        """Export the children in scope, one batch (one read, one audit commit) at a time.

        :raises JobGone: the job was deleted or failed meanwhile.
        """
        after = 0
        while True:
            batch, scanned, after = self._read_batch(after)
            if not scanned:
                return
            self._beat("children", scanned, batch)
            by_type: defaultdict[str, list[bytes]] = defaultdict(list)
            for item in batch:
                for resource_type, line in item.lines:
                    by_type[resource_type].append(line)
            for resource_type, lines in by_type.items():
                files.write(resource_type, lines)

    def _read_batch(self, after: int) -> tuple[list[ChildExport], int, int]:
        """Return the next batch of children after internal id ``after`` as exports, how many
        were read and the last id (keyset paging)."""
        with self.db.transaction() as session:
            children = self._patient_entries(session, after) if self.mapped == PATIENTS_ONLY \
                else self._children(session, after)
            if not children:
                return [], 0, after
            assessments = assessments_by_child(session, [c.id for c in children]) \
                if self.mapped != PATIENTS_ONLY else {}
            batch = [self._export_child(session, c, assessments.get(c.id, []))
                     for c in children]
            return batch, len(children), children[-1].id

    def _children(self, session: Session, after: int) -> list[Child | ChildRow]:
        """Return the next batch of children in scope after internal id ``after`` as ORM
        records (their CareTeams and PractitionerRoles are rendered from them)."""
        query = child_query().where(*self._conditions(), Child.id > after)
        return list(session.scalars(query.order_by(Child.id).limit(BATCH_SIZE)).unique())

    def _patient_entries(self, session: Session, after: int) -> list[Child | ChildRow]:
        """Return the next batch of children in scope after internal id ``after`` as light
        records (``adapter.store.rows``): an export of Patients alone maps nothing else."""
        ids = list(session.scalars(select(Child.id).where(*self._conditions(), Child.id > after)
                                   .order_by(Child.id).limit(BATCH_SIZE)))
        return list(entries_rows(session, ids))

    def _export_child(self, session: Session, child: Child | ChildRow,
                      assessments: list[Assessment]) -> ChildExport:
        """Return the lines of one child as the caller may see it (``_failed`` says what
        becomes of one that cannot be mapped)."""
        item = ChildExport(child.resource_id, False)
        try:
            item.override = disclose_child(child, self.caller).override
            self._add(item, child_resources(session, child, self.caller, self.mapped,
                                            self.base),
                      self._changed(child.last_updated))
            for assessment in assessments:
                resources = assessment_resources(session, assessment, self.caller, self.mapped,
                                                 self.base)
                self._add(item, resources, self._changed(assessment.last_updated))
        except Exception as exc:  # reported per child: one bad entry must not stop the export
            log.warning("%s: Patient/%s not exported (%s)", self.name, child.resource_id,
                        type(exc).__name__)
            self._failed(item, child, exc)
        else:
            self.references |= item.references
        return item

    def _changed(self, last_updated: dt.datetime) -> bool:
        """Return True when a record changed after ``_since`` (or there is no ``_since``)."""
        since = self.since
        return since is None or (as_utc(last_updated) or last_updated) > since

    def _add(self, item: ChildExport, resources: Iterable[Resource], changed: bool) -> None:
        """Add the requested resources (when changed) to ``item``, noting their references."""
        if not changed and not self.need_references:
            return
        for resource in resources:
            if self.need_references:
                references(resource, item.references)
            if changed and resource["resourceType"] in self.types:
                require_renderable(resource)  # else the child's error line says why
                item.lines.append((resource["resourceType"], ndjson_line(resource)))

    # --- organisations and practitioners ------------------------------------------------

    def _export_directory(self, files: NdjsonFiles, resource_type: str) -> None:
        """Write the organisations or practitioners: at Patient and Group level those the
        exported resources refer to, at system level all of them, one batch at a time.

        :raises JobGone: the job was deleted or failed meanwhile.
        """
        model = export_source(resource_type).model
        if self.group:
            prefix = f"{resource_type}/"
            ids = sorted(r[len(prefix):] for r in self.references if r.startswith(prefix))
            for start in range(0, len(ids), BATCH_SIZE):
                self._directory_batch(files, resource_type,
                                      model.resource_id.in_(ids[start:start + BATCH_SIZE]))
            return
        after: int | None = 0
        while after is not None:
            after = self._directory_batch(files, resource_type, model.id > after)

    def _directory_batch(self, files: NdjsonFiles, resource_type: str,
                         condition: Any) -> int | None:
        """Write one batch of organisations or practitioners matching ``condition`` that
        changed after ``_since``, in id order; return the last id when the batch was full
        (keyset paging: more may follow), else None.

        :raises JobGone: the job was deleted or failed meanwhile.
        """
        source = export_source(resource_type)
        model = source.model
        query: Select[Any] = select(model).where(condition)
        if self.since is not None:
            query = query.where(model.last_updated > self.since)
        with self.db.transaction() as session:
            rows = list(session.scalars(query.order_by(model.id).limit(BATCH_SIZE)))
            withheld: list[Unrenderable] = []
            lines = [ndjson_line(resource) for resource in
                     renderable([source.render(row, self.base) for row in rows], withheld)]
        self._beat(f"{resource_type} resources")
        files.write(resource_type, lines)
        if withheld:
            self._withheld(files, withheld)
        return rows[-1].id if len(rows) == BATCH_SIZE else None



def export_source(resource_type: str) -> ExportSource:
    """Return what bulk $export reads for ``resource_type`` (its registry spec's
    ``export_source``).

    :raises LookupError: the type is not declared with one (a declaration error).
    """
    spec = spec_of(resource_type)
    if spec is None or spec.export_source is None:
        raise LookupError(f"{resource_type} is exportable but declares no export_source "
                          "(adapter/registry.py)")
    source: ExportSource = attribute(spec.export_source)
    return source


def assessments_by_child(session: Session, child_ids: list[int]) -> dict[int, list[Assessment]]:
    """Return the assessment references of the given children, by child."""
    found: defaultdict[int, list[Assessment]] = defaultdict(list)
    query = select(Assessment).where(Assessment.child_id.in_(child_ids)) \
        .options(selectinload(Assessment.members)).order_by(Assessment.id)
    for assessment in session.scalars(query).unique():
        found[assessment.child_id].append(assessment)
    return found


class Exporter(NdjsonExporter):
    """Writes one job's files for its client."""

    def __init__(self, db: Database, settings: ExportSettings, spec: JobSpec,
                 caller: Caller) -> None:
        super().__init__(db, caller, spec.types, group=spec.level != "system",
                         since=spec.since)
        self.settings, self.spec = settings, spec
        self.name = f"export {spec.job_id}"

    def run(self) -> None:
        """Write the files and complete the job.

        :raises JobGone: the job was deleted or failed meanwhile.
        """
        folder = self.settings.folder(self.spec.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        files = NdjsonFiles(folder)
        try:
            self._start()
            if self.spec.notes:
                files.write(OUTCOME, [ndjson_line(operation_outcome(self.spec.notes))])
            self.export(files)
            if self.overrides:
                note = issue("warning", "suppressed", BREAK_GLASS.format(n=self.overrides))
                files.write(OUTCOME, [ndjson_line(operation_outcome([note]))])
        finally:
            files.close()
        self._finish(files)

    # --- the job row ------------------------------------------------------------------

    def _job(self, session: Session) -> ExportJob:
        """Return the job's row, locked for the update.

        :raises JobGone: deleted, cancelled or failed meanwhile.
        """
        job = session.scalar(select(ExportJob).where(
            ExportJob.job_id == self.spec.job_id).with_for_update())
        if job is None or job.state not in RUNNING_STATES:
            raise JobGone(self.spec.job_id)
        return job

    def _start(self) -> None:
        """Mark the job in progress with the number of children to go through."""
        with self.db.write_transaction() as session:
            job = self._job(session)
            total = session.scalar(select(func.count(Child.id)).where(*self._conditions()))
            job.state, job.phase = "in-progress", "children"
            job.children_total, job.heartbeat = int(total or 0), utcnow()

    def _beat(self, phase: str, scanned: int = 0,
              batch: Iterable[ChildExport] = ()) -> None:
        """Commit progress, and the audit records of a batch of children.

        :raises JobGone: the job was deleted or failed meanwhile.
        """
        with self.db.write_transaction() as session:
            job = self._job(session)
            self._record_exported(session, batch)
            job.children_done += scanned
            job.phase, job.heartbeat = phase, utcnow()

    def _detail(self) -> str:
        """Return the ``detail`` of the job's audit records."""
        return f"bulk export {self.spec.job_id}"

    def _finish(self, files: NdjsonFiles) -> None:
        """Complete the job with its files; it expires ``EXPORT_TTL_SECONDS`` later.

        :raises JobGone: the job was deleted or failed meanwhile.
        """
        with self.db.write_transaction() as session:
            job = self._job(session)
            now = utcnow()
            job.state, job.phase, job.finished, job.heartbeat = "completed", "completed", now, now
            job.outputs, job.error_files = files.outputs(), files.errors()
            job.expires = now + self.settings.ttl

    def _conditions(self) -> list[Any]:
        """Return the conditions selecting the children in the job's scope."""
        conditions = [visible_to(self.caller)]
        if self.spec.authority_id is not None:
            conditions.append(Child.managing_organisation_id == self.spec.authority_id)
        if self.spec.patients is not None:
            conditions.append(Child.resource_id.in_(self.spec.patients))
        since = self.spec.since
        if since is not None and not self.need_references:
            changed_assessments = select(Assessment.child_id).where(
                Assessment.last_updated > since)
            conditions.append(or_(Child.last_updated > since,
                                  Child.id.in_(changed_assessments)))
        return conditions

