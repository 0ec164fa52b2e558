"""What each FHIR resource type's service provides to the REST layer: the interactions it
supports, its search parameters, and the results it returns (rendered resource dicts with
their version), so that routes stay thin and the CapabilityStatement can be generated."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from sqlalchemy.orm import Session

from adapter.fhir.search import SearchParam, SearchRequest
from adapter.security.caller import Caller


@dataclass
class Rendered:
    """A resource as one caller may see it, with its version for ETag / Last-Modified."""

    resource: dict[str, Any]
    version: int
    last_updated: dt.datetime
    # Informational issues for the caller (data not kept, break-glass warning, ...).
    issues: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Page:
    """One page of search results."""

    matches: list[dict[str, Any]]
    included: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None = None


@dataclass
class WriteResult:
    """The outcome of a create or update."""

    rendered: Rendered
    created: bool
    changed: bool = True
    # A conditional create that found the resource instead (FHIR R4 http.html#ccreate).
    matched: bool = False
    # The resource carries what is shown this once (a Subscription's signing secret): it is
    # returned whatever ``Prefer: return=`` asks (RFC 7240 lets a server not apply one).
    shown_once: bool = False


class ResourceHandler(Protocol):
    """The service behind one resource type's REST interactions."""

    resource_type: ClassVar[str]
    interactions: ClassVar[tuple[str, ...]]
    search_params: ClassVar[dict[str, SearchParam]]
    includes: ClassVar[frozenset[str]]
    revincludes: ClassVar[frozenset[str]]
    profile: ClassVar[str | None]

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return the current version (:raises NotFound, Gone:)."""

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return one version (:raises NotFound, Gone:)."""

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return every version, newest first: (rendered or None if deleted, version, method,
        last updated) (:raises NotFound:)."""

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of matches (:raises BadRequest:)."""

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many resources match (``_summary=count``)."""

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Create from a FHIR resource (:raises Invalid, Conflict, Forbidden:)."""

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Update (or create with a derivable id) (:raises PreconditionFailed, Invalid:)."""

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Delete (:raises MethodNotAllowed, Conflict, NotFound:)."""

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Return the issues inbound validation finds in ``resource`` (no change is made)."""
