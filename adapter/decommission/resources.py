"""The decommissioning's FHIR resources: the plan as a read-only ``PlanDefinition`` and each
purge instruction as an R4 ``Task`` on the UK Core Task profile.

Why PlanDefinition rather than Basic: R4 ``PlanDefinition`` carries a timetable of actions in
core elements (``action.timingDateTime``, ``effectivePeriod``, ``status``), so every client can
read the dates without knowing an extension of ours; ``Basic`` would carry them only in
extensions (FHIR R4 basic.html: "uses extensions for all its content").
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from adapter.decommission.codes import (
    CHILD_COUNT_INPUT,
    CHILD_INPUT,
    PHASE_TITLES,
    PLAN_ID,
    PURGE,
    PURGE_COUNT_OUTPUT,
    PURGE_LIST_INPUT,
    coding,
)
from adapter.decommission.plan import PlanView, aware
from adapter.models import Organisation, PurgeTask
from adapter.settings import Settings
from adapter.systems import ODS_CODE, UKCORE_PROFILE_BASE, OwnSystems

TASK_PROFILE: Final = f"{UKCORE_PROFILE_BASE}UKCore-Task"
# http://terminology.hl7.org/CodeSystem/plan-definition-type and usage-context-type (R4).
PLAN_TYPE: Final = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
USAGE_CONTEXT: Final = "http://terminology.hl7.org/CodeSystem/usage-context-type"
NDJSON: Final = "application/fhir+ndjson"


def instant(moment: dt.datetime) -> str:
    """Return a FHIR instant (UTC, milliseconds)."""
    return aware(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_text(moment: dt.datetime, time_zone: str) -> str:
    """Return ``moment`` in words in the plan's time zone, e.g. ``6 August 2026 12:00 BST``."""
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo(time_zone))
    return f"{local.day} {local:%B %Y %H:%M} {local.tzname()}"


def timetable_text(plan: PlanView) -> str:
    """Return the timetable in one sentence (OperationOutcomes, notices, the dashboard)."""
    t = plan.timetable
    return (("DRILL (not the real timetable): " if plan.drill else "")
            + f"ContactPoint decommissioning, phase {PHASE_TITLES[plan.phase].lower()}: run-down "
            f"(read only) from {local_text(t.run_down_at, t.time_zone)}, switch-off at "
            f"{local_text(t.switch_off_at, t.time_zone)}, every copy of the data destroyed by "
            f"{local_text(t.destroy_by_at, t.time_zone)}.")


def _action(base: str, code: str, title: str, at: dt.datetime, text: str) -> dict[str, Any]:
    """Return one ``PlanDefinition.action`` of the timetable."""
    return {"id": code, "title": title, "description": text,
            "code": [{"coding": [coding(base, code, title)]}], "timingDateTime": instant(at)}


def plan_definition(plan: PlanView, base: str) -> dict[str, Any]:
    """Return the plan as a FHIR R4 PlanDefinition (phase in ``useContext``; this server's
    codes under the canonical ``base``)."""
    t = plan.timetable
    return {
        "resourceType": "PlanDefinition", "id": PLAN_ID,
        "meta": {"versionId": str(plan.version), "lastUpdated": instant(plan.last_updated)},
        "url": f"{base}/PlanDefinition/{PLAN_ID}", "version": str(plan.version),
        "identifier": [{"system": OwnSystems(base).id_system("decommission-plan"),
                        "value": PLAN_ID}],
        "name": "ContactPointDecommissioning", "title": "ContactPoint decommissioning timetable",
        "type": {"coding": [{"system": PLAN_TYPE, "code": "workflow-definition"}]},
        "status": "retired" if plan.phase == "destroyed" else "active",
        # R4 PlanDefinition.experimental: "for testing purposes, not real usage" (a drill).
        "experimental": plan.drill,
        "date": instant(plan.last_updated), "publisher": "ContactPoint Gateway",
        "description": timetable_text(plan),
        "useContext": [{"code": {"system": USAGE_CONTEXT, "code": "workflow"},
                        "valueCodeableConcept": {"coding": [coding(base, plan.phase,
                                                                   PHASE_TITLES[plan.phase])],
                                                 "text": f"Current phase: {plan.phase}"}}],
        "effectivePeriod": {"start": instant(t.run_down_at), "end": instant(t.destroy_by_at)},
        "action": [
            _action(base, "run-down", "Run-down", t.run_down_at,
                    "Last use: writes are refused; reads, exports and eCAF re-keying go on."),
            _action(base, "switched-off", "Switch-off", t.switch_off_at,
                    "Only purge traffic: purge Tasks, Subscription status and metadata. "
                    f"Reminders every {plan.reminder_days} days; escalation "
                    f"{plan.escalate_days} days after switch-off."),
            _action(base, "destroyed", "Destruction", t.destroy_by_at,
                    "Every copy destroyed; a signed certificate is issued."),
        ],
    }


def _owner(organisation: Organisation | None, code: str, base: str) -> dict[str, Any]:
    """Return ``Task.owner``: the client's organisation by reference (when the directory holds
    it), by its national code, and by name."""
    system = ODS_CODE if organisation is None or organisation.ods_code == code \
        else OwnSystems(base).gss_code if organisation.gss_code == code \
        else OwnSystems(base).school_urn
    owner: dict[str, Any] = {"identifier": {"system": system, "value": code}}
    if organisation is not None:
        owner["reference"] = f"Organization/{organisation.resource_id}"
        owner["display"] = organisation.name
    return owner


def child_input(base: str, child_ref: str, contactpoint_id: str | None) -> dict[str, Any]:
    """Return one ``Task.input`` naming a child: the Patient the system received, with the
    ContactPoint ID it was shown (every disclosure shows it, docs/domain.md "Shielding")."""
    reference: dict[str, Any] = {"reference": f"Patient/{child_ref}"}
    if contactpoint_id:
        reference["identifier"] = {"system": OwnSystems(base).contactpoint_id,
                                   "value": contactpoint_id}
    return {"type": {"coding": [coding(base, CHILD_INPUT, "Child to purge")]},
            "valueReference": reference}


def purge_list_url(task: PurgeTask, public_base: str) -> str:
    """Return the URL of the NDJSON list of a Task's children, under the server's absolute
    base (``Settings.public_base``: ``GATEWAY_PUBLIC_URL``, never the request's ``Host``)."""
    return f"{public_base}/fhir/Task/{task.resource_id}/$purge-list"


def task_resource(task: PurgeTask, plan: PlanView, organisation: Organisation | None,
                  children: list[tuple[str, str | None]] | None,
                  settings: Settings) -> dict[str, Any]:
    """Return a purge Task (FHIR R4 task.html; UK Core Task). ``children`` are (Patient id,
    ContactPoint ID) pairs named inline; None refers to the NDJSON list instead."""
    base = settings.canonical_base
    inputs = [{"type": {"coding": [coding(base, CHILD_COUNT_INPUT, "Children named")]},
               "valueUnsignedInt": task.children}]
    if children is None:
        url = purge_list_url(task, settings.public_base)
        inputs.append({"type": {"coding": [coding(base, PURGE_LIST_INPUT, "List of children")]},
                       "valueAttachment": {"contentType": NDJSON, "url": url,
                                           "title": f"{task.children} children (NDJSON)"}})
    else:
        inputs += [child_input(base, ref, cpid) for ref, cpid in children]
    resource: dict[str, Any] = {
        "resourceType": "Task", "id": task.resource_id,
        "meta": {"versionId": str(task.version), "lastUpdated": instant(task.last_updated),
                 "profile": [TASK_PROFILE]},
        "identifier": [{"system": OwnSystems(base).id_system("purge-task"),
                        "value": task.resource_id}],
        "instantiatesCanonical": f"{base}/PlanDefinition/{PLAN_ID}",
        "status": task.status, "intent": "order", "priority": "urgent",
        "code": {"coding": [coding(base, PURGE, "Purge the records received")]},
        "description": _description(plan), "authoredOn": instant(task.issued),
        "lastModified": instant(task.last_updated),
        "requester": {"display": "ContactPoint Gateway"},
        "owner": _owner(organisation, task.organisation_code, base),
        "restriction": {"period": {"end": instant(plan.timetable.destroy_by_at)}},
        "input": inputs,
    }
    return _with_answer(resource, task, base)



def _description(plan: PlanView) -> str:
    """Return what the owner is asked to do, and how to answer."""
    return ("Destroy every record of the children named in input (received from the "
            "ContactPoint Gateway) in every system and copy you hold, by "
            f"{local_text(plan.timetable.destroy_by_at, plan.timetable.time_zone)}. Answer by "
            "updating this Task: status accepted, then completed with an output purge-count "
            "(records destroyed); or rejected with a statusReason.")


def _with_answer(resource: dict[str, Any], task: PurgeTask, base: str) -> dict[str, Any]:
    """Add the owner's answer (reason, purge count) to a Task resource."""
    if task.status_reason:
        resource["statusReason"] = {"text": task.status_reason}
    if task.purged is not None:
        resource["output"] = [{"type": {"coding": [coding(base, PURGE_COUNT_OUTPUT,
                                                          "Records destroyed")]},
                               "valueUnsignedInt": task.purged}]
    return resource
