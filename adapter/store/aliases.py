"""Earlier logical ids of resources (``resource_alias``, README "Identifiers"): a read of an
old id is answered with a redirect to the resource's id now, if the caller may see it."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter.errors import Gone, Moved, NotFound
from adapter.models import ResourceAlias


def current_id(session: Session, resource_type: str, old_id: str) -> str | None:
    """Return the id that the earlier id ``old_id`` of a ``resource_type`` stands for now."""
    return session.scalar(select(ResourceAlias.new_id).where(
        ResourceAlias.resource_type == resource_type, ResourceAlias.old_id == old_id))


def redirect_if_moved(session: Session, resource_type: str, resource_id: str,
                      find: Callable[[str], object]) -> None:
    """Raise Moved when ``resource_id`` is an earlier id of a resource that ``find`` (the
    handler's look-up for the caller) finds, or finds deleted; return otherwise, so that the
    caller answers as for an unknown id (an alias tells nobody more than the resource does).

    :raises Moved: the id has a new one the caller may know of.
    """
    new_id = current_id(session, resource_type, resource_id)
    if new_id is None:
        return
    try:
        find(new_id)
    except NotFound:
        return
    except Gone:
        pass
    raise Moved(resource_type, resource_id, new_id)
