"""Delivery channels: ``rest-hook`` (an HTTP POST of the notification Bundle, Subscriptions
R5 Backport IG "Channels") and ``mesh`` (a MESH message to the subscriber's mailbox, sent with
NHS England's ``mesh-client``). A channel sends one body and says what happened; retries,
ordering and bookkeeping are the dispatcher's."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol

import requests
import urllib3
from mesh_client import MeshClient, MeshError

from adapter.notify.addresses import AddressRefused, resolve
from adapter.notify.signing import SIGNATURE_HEADER, signature

log = logging.getLogger(__name__)

# A Retry-After beyond this is capped: the dispatcher never parks a subscription for longer.
MAX_RETRY_AFTER: Final = 3600.0
USER_AGENT: Final = "contactpoint-gateway-notify/0.1"
MESH_PREFIX: Final = "mesh:"
# Connections kept per receiving host (more threads than this open extra, unpooled ones).
POOL_SIZE: Final = 16
# An answer body longer than this is not read: its connection is closed instead.
MAX_ANSWER: Final = 64 * 1024
# What a subscriber is told of any failed delivery (Subscription.error, $status): one text
# whatever happened, so that a subscription cannot tell a closed port from an open one, a
# timeout, a TLS failure or a refused address (OWASP "Server Side Request Forgery Prevention
# Cheat Sheet", "blind" requests); operators find the cause in the log and delivery records.
SUBSCRIBER_ERROR: Final = ("The endpoint did not accept the notification; the gateway keeps "
                           "retrying (its operators can see why in the delivery log).")


@dataclass(frozen=True)
class Parcel:
    """One body to deliver to one subscription's endpoint."""

    endpoint: str
    body: bytes
    mime: str
    headers: tuple[str, ...]
    secret: str
    timeout: float
    reference: str  # a stable id of the notification (MESH local id)


@dataclass(frozen=True)
class Outcome:
    """What happened to one delivery attempt (``detail`` never holds personal data)."""

    delivered: bool
    http_status: int | None = None
    retry_after: float | None = None
    detail: str | None = None


class Channel(Protocol):
    """Something that delivers a Parcel."""

    def send(self, parcel: Parcel) -> Outcome:
        """Deliver ``parcel`` once and say how it went."""

    def close(self) -> None:
        """Close the connections it holds."""


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delay or HTTP date, RFC 9110
    section 10.2.3), capped at ``MAX_RETRY_AFTER``; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    seconds = moment.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def request_headers(parcel: Parcel) -> dict[str, str]:
    """Return the headers of a rest-hook POST: the subscription's own (Subscription.channel
    .header, each ``Name: value``), then the content type and the body's signature."""
    headers: dict[str, str] = {"User-Agent": USER_AGENT}
    for line in parcel.headers:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    headers["Content-Type"] = parcel.mime
    headers[SIGNATURE_HEADER] = signature(parcel.secret, parcel.body)
    return headers


class EndpointRefused(urllib3.exceptions.NewConnectionError):
    """The endpoint's host resolved to an address notifications may not go to."""


def pinned_socket(connection: urllib3.connection.HTTPConnection) -> socket.socket:
    """Resolve the connection's host once, check every address it resolves to
    (``adapter.notify.addresses``) and connect to those very addresses: TLS still names and
    verifies the host, but no second lookup can lead elsewhere (DNS rebinding).

    :raises EndpointRefused: the host does not resolve or resolves to a non-public address.
    """
    try:
        addresses = resolve(connection.host, int(connection.port or 0))
    except AddressRefused as exc:
        raise EndpointRefused(connection, str(exc)) from exc
    error: OSError | None = None
    for _family, address in addresses:
        try:
            return urllib3.util.connection.create_connection(
                (address, int(connection.port or 0)), connection.timeout,
                source_address=connection.source_address,
                socket_options=connection.socket_options)
        except OSError as exc:
            error = exc
    if isinstance(error, TimeoutError):
        raise urllib3.exceptions.ConnectTimeoutError(
            connection, f"connect timeout: {error}") from error
    raise urllib3.exceptions.NewConnectionError(connection, f"connect failed: {error}") \
        from error


class PinnedHTTPConnection(urllib3.connection.HTTPConnection):
    """An HTTP connection to checked, public addresses only."""

    def _new_conn(self) -> socket.socket:
        """Connect to the checked addresses of the host."""
        return pinned_socket(self)


class PinnedHTTPSConnection(urllib3.connection.HTTPSConnection):
    """An HTTPS connection to checked, public addresses only."""

    def _new_conn(self) -> socket.socket:
        """Connect to the checked addresses of the host."""
        return pinned_socket(self)


class PinnedHTTPPool(urllib3.HTTPConnectionPool):
    """A connection pool of ``PinnedHTTPConnection``."""

    ConnectionCls = PinnedHTTPConnection


class PinnedHTTPSPool(urllib3.HTTPSConnectionPool):
    """A connection pool of ``PinnedHTTPSConnection``."""

    ConnectionCls = PinnedHTTPSConnection


def _failed(parcel: Parcel, detail: str, exc: BaseException) -> Outcome:
    """Log why a delivery failed (the endpoint's host and the error number or kind, never
    the body) and return its outcome."""
    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, OSError | AddressRefused):
        cause = cause.__cause__
    errno = getattr(cause, "errno", None)
    why = str(cause) if isinstance(cause, AddressRefused) else \
        f"{type(exc).__name__}{f', errno {errno}' if errno else ''}"
    level = logging.WARNING if isinstance(exc, EndpointRefused) else logging.INFO
    log.log(level, "rest-hook delivery to host %s failed: %s (%s)",
            urllib3.util.parse_url(parcel.endpoint).host, detail, why)
    return Outcome(False, detail=detail)


class RestHook:
    """The rest-hook channel: one urllib3 pool manager shared by the dispatcher's threads
    (thread-safe; keep-alive connection pools per host), without requests' per-call overhead
    on this hot path. No retries and no redirects of its own (the dispatcher retries; a
    redirect is not a delivery), no proxies from the environment, and the answer's body is
    read only to reuse the connection: at most ``MAX_ANSWER`` bytes, undecoded. Connections
    go only to public addresses, checked at each connection (``pinned_socket``), unless
    ``allow_private`` (``GATEWAY_NOTIFY_ALLOW_PRIVATE``)."""

    def __init__(self, pool_size: int = POOL_SIZE, *, allow_private: bool = False) -> None:
        self._pool = urllib3.PoolManager(num_pools=64, maxsize=pool_size, block=False,
                                         retries=False)
        if not allow_private:
            self._pool.pool_classes_by_scheme = {"http": PinnedHTTPPool,
                                                 "https": PinnedHTTPSPool}

    def close(self) -> None:
        """Close every pooled connection (the channel stays usable: it reconnects)."""
        self._pool.clear()

    def send(self, parcel: Parcel) -> Outcome:
        """POST the body; a 2xx answer is a delivery (redirects are not followed)."""
        try:
            response = self._pool.request(
                "POST", parcel.endpoint, body=parcel.body, headers=request_headers(parcel),
                timeout=urllib3.Timeout(total=parcel.timeout), redirect=False,
                preload_content=False, decode_content=False)
        except EndpointRefused as exc:
            return _failed(parcel, "address not allowed", exc)
        except urllib3.exceptions.NewConnectionError as exc:  # (a ConnectTimeoutError subclass)
            return _failed(parcel, "connection failed", exc)
        except urllib3.exceptions.TimeoutError as exc:
            return _failed(parcel, "timeout", exc)
        except urllib3.exceptions.ProtocolError as exc:
            return _failed(parcel, "connection failed", exc)
        except urllib3.exceptions.HTTPError as exc:
            return _failed(parcel, f"request failed: {type(exc).__name__}", exc)
        except (ValueError, OSError) as exc:  # e.g. a header value http.client cannot encode
            return _failed(parcel, f"request failed: {type(exc).__name__}", exc)
        try:
            _discard_answer(response, time.monotonic() + parcel.timeout)
        finally:
            response.release_conn()
        if 200 <= response.status < 300:
            return Outcome(True, response.status)
        return Outcome(False, response.status, retry_after(response.headers.get("Retry-After")),
                       f"HTTP {response.status}")


def _discard_answer(response: urllib3.BaseHTTPResponse, deadline: float) -> None:
    """Read and drop an answer's body so that its connection can be reused; one longer than
    ``MAX_ANSWER``, slower than the deadline or broken closes the connection instead (the
    status line and headers are all a delivery needs)."""
    left = MAX_ANSWER
    try:
        for chunk in response.stream(16 * 1024, decode_content=False):
            left -= len(chunk)
            if left < 0 or time.monotonic() > deadline:
                response.close()
                return
    except (urllib3.exceptions.HTTPError, OSError):
        response.close()


@dataclass(frozen=True)
class MeshSettings:
    """The gateway's own MESH mailbox (``GATEWAY_MESH_*``)."""

    url: str
    mailbox: str
    password: str
    shared_key: str
    workflow_id: str
    ca_bundle: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MeshSettings:
        """Return the settings from the app configuration."""
        return cls(str(config["MESH_URL"]), str(config["MESH_MAILBOX"]),
                   str(config["MESH_PASSWORD"]), str(config["MESH_SHARED_KEY"]),
                   str(config["MESH_WORKFLOW_ID"]), str(config["MESH_CA_BUNDLE"]))


def mesh_recipient(endpoint: str) -> str:
    """Return the mailbox id of a ``mesh:MAILBOX`` endpoint."""
    return endpoint.removeprefix(MESH_PREFIX)


class Mesh:
    """The MESH channel: the Bundle as one MESH message from the gateway's mailbox."""

    def __init__(self, settings: MeshSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._opened: list[MeshClient] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every thread's MESH client (mesh-client asks for it explicitly)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for client in opened:
            client.close()  # type: ignore[no-untyped-call]
        self._local = threading.local()

    def _client(self, timeout: float) -> MeshClient:
        """Return this thread's MESH client (its own retries off: the dispatcher retries)."""
        client: MeshClient | None = getattr(self._local, "client", None)
        if client is None:
            s = self.settings
            client = MeshClient(s.url, s.mailbox, s.password,
                                shared_key=s.shared_key.encode() or None,
                                verify=s.ca_bundle or True, max_retries=0, timeout=timeout,
                                application_name="contactpoint-gateway")
            self._local.client = client
            with self._lock:
                self._opened.append(client)
        return client

    def send(self, parcel: Parcel) -> Outcome:
        """Send the body to the endpoint's mailbox; accepted by MESH is delivered."""
        if not self.settings.url:
            return Outcome(False, detail="MESH is not configured (GATEWAY_MESH_URL)")
        suffix = "xml" if parcel.mime.endswith("xml") else "json"
        try:
            message_id = self._client(parcel.timeout).send_message(
                mesh_recipient(parcel.endpoint), parcel.body,
                workflow_id=self.settings.workflow_id, subject="FHIR subscription notification",
                local_id=parcel.reference, filename=f"{parcel.reference}.{suffix}",
                content_type=parcel.mime)
        except requests.Timeout:
            return Outcome(False, detail="MESH timeout")
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            return Outcome(False, status, detail=f"MESH HTTP {status}")
        except (requests.RequestException, MeshError) as exc:
            return Outcome(False, detail=f"MESH send failed: {type(exc).__name__}")
        return Outcome(True, 202, detail=f"MESH message {message_id}")
