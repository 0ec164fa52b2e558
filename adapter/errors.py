"""The GatewayError family and its FHIR OperationOutcome form (FHIR R4 operationoutcome.html).

Every error the gateway answers with is one of these, rendered by one handler
(``adapter.http``) in the negotiated format; a stack trace or SQL never reaches a caller.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final


class GatewayError(Exception):
    """Base of every error answered to a caller; ``status`` is the HTTP status."""

    status = 500
    issue_code = "exception"  # FHIR IssueType (http://hl7.org/fhir/issue-type)
    severity = "error"

    def __init__(self, message: str, *, expression: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.headers = headers or {}

    def to_outcome(self) -> dict[str, Any]:
        """Return this error as a FHIR OperationOutcome resource (a plain dict)."""
        return operation_outcome([issue(self.severity, self.issue_code, self.message,
                                        self.expression)])


class BadRequest(GatewayError):
    """The request is malformed (syntax, unknown parameter in strict mode)."""

    status, issue_code = 400, "invalid"


class Unauthorized(GatewayError):
    """No valid credentials."""

    status, issue_code = 401, "login"


class Forbidden(GatewayError):
    """Credentials valid but not sufficient."""

    status, issue_code = 403, "forbidden"


class NotFound(GatewayError):
    """No such resource or route."""

    status, issue_code = 404, "not-found"


class MethodNotAllowed(GatewayError):
    """The interaction is not supported on this resource type."""

    status, issue_code = 405, "not-supported"


class Conflict(GatewayError):
    """The request conflicts with the current state (duplicates, phase rules)."""

    status, issue_code = 409, "conflict"


class ExistingEntry(Conflict):
    """A create met an existing record it would duplicate (one live directory entry per NHS
    number). ``resource`` is ``Type/id`` of that record when the caller may be told it, else
    None; a conditional create (``If-None-Exist``) answers with it instead of the 409.
    ``holder`` is ``Type/id`` of the stored record whether or not it is named (None for a
    duplicate within one batch): the refusal is audited against it."""

    def __init__(self, message: str, *, resource: str | None, expression: str | None = None,
                 holder: str | None = None) -> None:
        super().__init__(message, expression=expression)
        self.resource = resource
        self.holder = holder or resource


class Gone(GatewayError):
    """The resource existed and was deleted."""

    status, issue_code = 410, "deleted"


class NotAcceptable(GatewayError):
    """The representation asked for (``_format``, ``Accept``) cannot be given."""

    status, issue_code = 406, "not-supported"


class PreconditionFailed(GatewayError):
    """``If-Match`` named a version that is no longer current."""

    status, issue_code = 412, "conflict"


class PayloadTooLarge(GatewayError):
    """The body is over the configured limit."""

    status, issue_code = 413, "too-costly"


class UnsupportedMediaType(GatewayError):
    """The body's content type is not one the route accepts."""

    status, issue_code = 415, "not-supported"


class Invalid(GatewayError):
    """The content is well-formed but breaks a rule (profile, identifier, business rule)."""

    status, issue_code = 422, "invalid"


class Moved(GatewayError):
    """The resource has a new logical id (README "Identifiers"): 301 Moved Permanently
    (RFC 9110 section 15.4.2), the request's URL at the new id in ``Location`` (set by
    ``adapter.http``), and an OperationOutcome that says so."""

    status, issue_code, severity = 301, "informational", "information"

    def __init__(self, resource_type: str, old_id: str, new_id: str) -> None:
        super().__init__(f"{resource_type}/{old_id} has a new id: {resource_type}/{new_id} "
                         "(the earlier id stays an alias of it).")
        self.resource_type, self.old_id, self.new_id = resource_type, old_id, new_id


class Unavailable(GatewayError):
    """A dependency (the database) does not answer."""

    status, issue_code = 503, "transient"


# One step of an element path: a name, an optional repetition index, or a choice's type
# (``value.ofType(string)``); FHIRPath keywords that are no identifiers (fhirpath.html grammar:
# ``div`` is also Narrative.div) are written delimited, as is any name that is not an identifier.
_STEP: Final = re.compile(r"(?P<name>[^\[\]]+)(?P<index>(?:\[\d+\])*)")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A FHIRPath string literal (fhirpath.html#string): quotes, backslash escapes.
_STRING_LITERAL: Final = re.compile(r"'(?:[^'\\]|\\.)*'")
_OF_TYPE: Final = re.compile(r"ofType\([A-Za-z][A-Za-z0-9.]*\)")
_KEYWORDS: Final = frozenset({"and", "or", "xor", "implies", "div", "mod", "true", "false"})


def issue(severity: str, code: str, diagnostics: str,
          expression: str | None = None) -> dict[str, Any]:
    """Return one OperationOutcome.issue, naming where the problem is (``expression``) in the
    element R4 defines for it (operationoutcome.html): a path into a FHIR resource or Bundle
    is ``expression``, written as FHIRPath; an XPath into a directory XML document, and a
    request parameter or header (``_count``, ``If-Match``: ``location`` "http." + its name),
    are ``location``."""
    item: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        key, value = placed(expression)
        item[key] = [value]
    return item


def placed(where: str) -> tuple[str, str]:
    """Return ("expression", FHIRPath) or ("location", XPath or "http." + name) for ``where``."""
    unquoted = _STRING_LITERAL.sub("''", where)  # a URL in a where() literal is no XPath
    if "/" in unquoted:
        return "location", where
    root = where.split(".", 1)[0].split("[", 1)[0]
    if not _resource_type(root):
        return "location", f"http.{where}"
    if "(" in unquoted:  # written as FHIRPath already, with a function (fhirpath.html#functions)
        return "expression", where
    return "expression", ".".join(_fhirpath_step(step) for step in where.split("."))


@functools.lru_cache(maxsize=256)
def _resource_type(name: str) -> bool:
    """Return whether ``name`` is a FHIR resource type."""
    return bool(_IDENTIFIER.fullmatch(name)) and is_resource_type(name)


@functools.cache
def is_resource_type(type_name: str) -> bool:
    """Return whether ``type_name`` is a FHIR R4 resource type (not a data type), by the
    ``fhir.resources.R4B`` models (FHIR R4 resourcelist.html). Here, at the bottom of the
    package, because an error's location names its resource (``adapter.fhir.profiles`` asks
    it too)."""
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    try:
        return issubclass(get_fhir_model_class(type_name), Resource)
    except ValueError:
        return False


def _fhirpath_step(step: str) -> str:
    """Return one step of an element path as FHIRPath (fhirpath.html#grammar)."""
    if _OF_TYPE.fullmatch(step):
        return step
    found = _STEP.fullmatch(step)
    name, index = (found["name"], found["index"]) if found else (step, "")
    if _IDENTIFIER.fullmatch(name) and name not in _KEYWORDS \
            or len(name) > 1 and name[0] == name[-1] == "`":  # already delimited
        return step
    return "`" + name.replace("`", "'") + "`" + index


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """Return an OperationOutcome resource holding ``issues`` (at least one, per R4 1..*)."""
    return {"resourceType": "OperationOutcome",
            "issue": issues or [issue("information", "informational", "All OK")]}
