"""Inbound validation, the same for every write and for ``$validate`` (docs/architecture.md
"Inbound validation"): the FHIR resource model (fhir.resources R4B), then the form of its
references (``adapter.fhir.references``), then the profiles it claims (this service's, else
the UK Core profile of its type, read from the StructureDefinitions), then the mapping's rules;
``$validate`` then resolves the references against what is stored, as the writes do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

from adapter.db import get_db
from adapter.errors import Invalid, issue
from adapter.fhir import conformance, references
from adapter.mapping import fhir as mapping
from adapter.registry import attribute, reverse_maps
from adapter.security.caller import Caller
from adapter.settings import Settings
from adapter.systems import UKCORE_PROFILE_BASE
from adapter.vendored import UK_CORE_DIR

if TYPE_CHECKING:
    from flask import Flask

UK_CORE_FOLDER: Final = UK_CORE_DIR


def profile_issues(resource: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """Return the issues of ``resource`` against its declared profiles, else UK Core's."""
    declared = conformance.declared_profiles(resource)
    profiles = declared or [f"{UKCORE_PROFILE_BASE}UKCore-{resource_type}"]
    found = [i for url in profiles for i in conformance.check_resource(resource, url)]
    return [issue(i.severity, i.code, i.message, i.expression) for i in found]


def careteam_reverse(resource: dict[str, Any], *, base: str) -> tuple[Any, list[str]]:
    """Map a CareTeam back by its kind (eCAF Team Around the Child, or a child's team)."""
    codes = {c.get("code") for cat in resource.get("category") or []
             for c in cat.get("coding") or []}
    if "ecaf-tac" in codes:
        return mapping.careteam_to_assessment(resource, base=base)
    return mapping.careteam_to_involvements(resource, base=base)


def mapping_issues(resource: dict[str, Any], resource_type: str,
                   base: str) -> list[dict[str, Any]]:
    """Return the errors of the type's reverse mapping (``adapter.registry``) under the
    canonical ``base``, and what it would not keep, as issues."""
    reverse = attribute(reverse_maps()[resource_type])
    try:
        _record, ignored = reverse(resource, base=base)
    except Invalid as exc:
        return [issue("error", exc.issue_code, exc.message, exc.expression)]
    return [issue("information", "informational", f"Not kept: {path}.", path)
            for path in ignored]


def validate_inbound(resource_type: str, resource: dict[str, Any],
                     settings: Settings) -> list[dict[str, Any]]:
    """Return every issue an inbound write of ``resource`` meets (empty: acceptable); its
    references are normalised in place first (``references.normalise``), so that the mapping
    reads what the checks passed. ``settings``: this server's (its public FHIR base and
    canonical base), given by the provider that was made with them."""
    try:
        mapping.validate_resource(resource, resource_type)
    except Invalid as exc:
        return [issue("error", exc.issue_code, exc.message, exc.expression)]
    found = references.normalise(resource_type, resource, settings)
    if _errors(found):
        return found
    return found + profile_issues(resource, resource_type) + mapping_issues(
        resource, resource_type, settings.canonical_base)


# Set by :func:`offline` (the conformance kit, adapter/kit): no stored directory to look in.
_OFFLINE: ContextVar[bool] = ContextVar("offline_validation", default=False)


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Validate without the stored directory (the conformance kit checks files with no
    database): references are checked for their form only, never resolved, and the kit's
    report says that resolution needs the live gateway."""
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def validate_stored(resource_type: str, resource: dict[str, Any], caller: Caller,
                    settings: Settings) -> list[dict[str, Any]]:
    """Return the issues of ``$validate``: those of :func:`validate_inbound`, then the
    references that name nothing stored here (the 422 a write would meet), in a read-only
    session."""
    issues = validate_inbound(resource_type, resource, settings)
    if _errors(issues) or _OFFLINE.get():
        return issues
    with get_db().sessions() as session:
        moved = references.resolve_role_aliases(session, resource_type, resource, caller)
        return references.unresolved(session, resource_type, resource, caller,
                                     settings) + issues + moved


def _errors(issues: list[dict[str, Any]]) -> bool:
    """Return True when ``issues`` hold an error."""
    return any(i["severity"] in ("error", "fatal") for i in issues)


def require_valid(resource_type: str, resource: dict[str, Any],
                  settings: Settings) -> list[dict[str, Any]]:
    """Validate an inbound write (see :func:`validate_inbound`); return its warnings and
    information.

    :raises Invalid: an error (the first one, with its expression).
    """
    issues = validate_inbound(resource_type, resource, settings)
    for found in issues:
        if found["severity"] in ("error", "fatal"):
            where = (found.get("expression") or [None])[0]
            raise Invalid(found["diagnostics"], expression=where)
    return [i for i in issues if i["severity"] in ("warning", "information")]


def init_app(app: Flask) -> None:
    """Load this service's profiles and the vendored UK Core definitions once."""
    conformance.configure([UK_CORE_FOLDER], app.config["CANONICAL_BASE"])
