"""The purge agent's work (docs/holders.md "The reference purge agent").

For each open purge Task of its client (``GET /fhir/Task?status=...``, the README's holder
scopes ``system/Task.rus``) the agent accepts it, hands the children it names (inline, or the
NDJSON ``$purge-list``) to the local purge command or HTTP hook, and answers ``completed`` with
the records destroyed or ``rejected`` with the local system's reason.

Crash safety: each step is written to a state file (atomically: a temporary file renamed over
it) before the next begins, and every step can be repeated: accepting an accepted Task is
skipped, a purge that was started is run again (the local purge must be idempotent: the second
run deletes what is left), the records destroyed are added up across runs, and a purge whose
count was saved is reported without running it again. Nothing about a child is logged.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

log = logging.getLogger(__name__)

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPES: Final = "system/Task.rus"
OPEN: Final = "requested,received,accepted,in-progress"
PURGE_COUNT: Final = "purge-count"
FHIR_JSON: Final = "application/fhir+json"
REASON_LIMIT: Final = 500


class AgentError(Exception):
    """The agent cannot go on now (the gateway or the local system is unreachable, a refusal):
    nothing is lost, the next run resumes."""


@dataclass(frozen=True)
class Settings:
    """How the agent reaches the gateway and the local system."""

    base: str  # the gateway's base URL (FHIR under /fhir, the token endpoint /auth/token)
    client_id: str
    key_file: Path  # the client's private JWK (ES384 or RS384)
    state_file: Path
    purge_command: str | None = None
    purge_url: str | None = None
    timeout: float = 60.0
    token_url: str | None = None

    @property
    def token_endpoint(self) -> str:
        """Return the token endpoint (SMART Backend Services)."""
        return self.token_url or f"{self.base.rstrip('/')}/auth/token"


@dataclass
class Outcome:
    """What the agent did with one Task."""

    task: str
    status: str
    purged: int | None = None
    reason: str | None = None


@dataclass
class State:
    """The agent's progress per Task, kept in its state file."""

    path: Path
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        """Return the state saved in ``path`` (empty when there is none yet)."""
        if not path.exists():
            return cls(path)
        return cls(path, dict(json.loads(path.read_text()).get("tasks", {})))

    def step(self, task_id: str) -> dict[str, Any]:
        """Return what is known of one Task."""
        return self.tasks.setdefault(task_id, {"step": "new", "purged": 0})

    def save(self, task_id: str, **values: Any) -> None:
        """Record a step of one Task, durably (write a temporary file, fsync, rename)."""
        self.step(task_id).update(values)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w") as file:
            json.dump({"tasks": self.tasks}, file, indent=2, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)


def load_key(path: Path) -> ECKey | RSAKey:
    """Return the client's private key from a JWK file.

    :raises AgentError: not a private EC or RSA JWK.
    """
    try:
        data = json.loads(path.read_text())
        return ECKey.import_key(data) if data.get("kty") == "EC" else RSAKey.import_key(data)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise AgentError(f"cannot read a private JWK from {path}") from exc


class Gateway:
    """The gateway's API as the holder's client sees it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.trust_env = False
        self._token: tuple[str, float] | None = None

    def _assertion(self) -> str:
        """Return a signed client assertion (SMART Backend Services)."""
        key = load_key(self.settings.key_file)
        alg = "ES384" if isinstance(key, ECKey) else "RS384"
        now = int(time.time())
        claims = {"iss": self.settings.client_id, "sub": self.settings.client_id,
                  "aud": self.settings.token_endpoint, "exp": now + 240,
                  "jti": secrets.token_urlsafe(24)}
        return jwt.encode({"alg": alg, "kid": key.kid or "", "typ": "JWT"}, claims, key,
                          algorithms=[alg])

    def token(self) -> str:
        """Return an access token, fetching a new one when the last is about to expire.

        :raises AgentError: the token endpoint refused.
        """
        if self._token is not None and self._token[1] > time.monotonic() + 30:
            return self._token[0]
        form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self._assertion(), "scope": SCOPES}
        answer = self._send("POST", self.settings.token_endpoint, data=form, auth=False)
        body = answer.json()
        self._token = (str(body["access_token"]),
                       time.monotonic() + float(body.get("expires_in", 300)))
        return self._token[0]

    def _send(self, method: str, url: str, *, auth: bool = True, **kwargs: Any) -> Any:
        """Send one request; return the answer.

        :raises AgentError: unreachable, or not a 2xx answer.
        """
        headers = dict(kwargs.pop("headers", {}))
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            answer = self.session.request(method, url, headers=headers,
                                          timeout=self.settings.timeout, **kwargs)
        except requests.RequestException as exc:
            raise AgentError(f"{method} {url}: {type(exc).__name__}") from exc
        if not 200 <= answer.status_code < 300:
            raise AgentError(f"{method} {url}: HTTP {answer.status_code} {_diagnostics(answer)}")
        return answer

    def fhir(self, path: str) -> str:
        """Return the absolute URL of a FHIR path."""
        return f"{self.settings.base.rstrip('/')}/fhir/{path.lstrip('/')}"

    def open_tasks(self) -> list[dict[str, Any]]:
        """Return the client's open purge Tasks (every page)."""
        url: str | None = self.fhir(f"Task?status={OPEN}&_count=50")
        found = []
        while url:
            bundle = self._send("GET", url, headers={"Accept": FHIR_JSON}).json()
            found += [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
            url = next((link["url"] for link in bundle.get("link", [])
                        if link.get("relation") == "next"), None)
        return found

    def read(self, task_id: str) -> dict[str, Any]:
        """Return one Task."""
        result: dict[str, Any] = self._send("GET", self.fhir(f"Task/{task_id}"),
                                            headers={"Accept": FHIR_JSON}).json()
        return result

    def update(self, task: dict[str, Any]) -> dict[str, Any]:
        """Update a Task (the answer); return it as the gateway now has it."""
        result: dict[str, Any] = self._send(
            "PUT", self.fhir(f"Task/{task['id']}"), data=json.dumps(task),
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}).json()
        return result

    def lines(self, url: str) -> Iterator[dict[str, Any]]:
        """Yield the NDJSON lines of a purge list."""
        answer = self._send("GET", url, headers={"Accept": "application/fhir+ndjson"})
        for line in answer.text.splitlines():
            if line.strip():
                yield json.loads(line)


def _diagnostics(answer: requests.Response) -> str:
    """Return an OperationOutcome's first diagnostics (or nothing)."""
    try:
        return str(answer.json()["issue"][0].get("diagnostics", ""))[:300]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def children_of(gateway: Gateway, task: dict[str, Any]) -> list[dict[str, str]]:
    """Return the children a Task names: Patient id and ContactPoint ID of each."""
    children = []
    for item in task.get("input", []):
        reference = item.get("valueReference")
        if reference and str(reference.get("reference", "")).startswith("Patient/"):
            children.append({"patient": reference["reference"].removeprefix("Patient/"),
                             "contactpointId": (reference.get("identifier") or {}).get(
                                 "value", "")})
        attachment = item.get("valueAttachment")
        if attachment and attachment.get("url"):
            for patient in gateway.lines(attachment["url"]):
                ids = patient.get("identifier") or [{}]
                children.append({"patient": str(patient["id"]),
                                 "contactpointId": str(ids[0].get("value", ""))})
    return children
