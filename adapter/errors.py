"""The GatewayError family and its FHIR OperationOutcome form (FHIR R4 operationoutcome.html).

Every error the gateway answers with is one of these, rendered by one handler
(``adapter.http``) in the negotiated format; a stack trace or SQL never reaches a caller.
"""

from __future__ import annotations

from typing import Any


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
    None; a conditional create (``If-None-Exist``) answers with it instead of the 409."""

    def __init__(self, message: str, *, resource: str | None, expression: str | None = None
                 ) -> None:
        super().__init__(message, expression=expression)
        self.resource = resource


class Gone(GatewayError):
    """The resource existed and was deleted."""

    status, issue_code = 410, "deleted"


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


class Unavailable(GatewayError):
    """A dependency (the database) does not answer."""

    status, issue_code = 503, "transient"


def issue(severity: str, code: str, diagnostics: str,
          expression: str | None = None) -> dict[str, Any]:
    """Return one OperationOutcome.issue."""
    item: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        item["expression"] = [expression]
    return item


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """Return an OperationOutcome resource holding ``issues`` (at least one, per R4 1..*)."""
    return {"resourceType": "OperationOutcome",
            "issue": issues or [issue("information", "informational", "All OK")]}
