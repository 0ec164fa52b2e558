"""The destruction certificate: what was destroyed (rows per table before and
after), how (storage scrubbing), each system's answer to its purge instruction, the timetable,
and a digest of the audit trail; in JSON and in XML (``schemas/xml/certificate.xsd``), each
signed with the service's P-384 key (``adapter.security.keys``) as a JWS with detached content
(RFC 7515 appendix F):

- JSON: ``{"certificate": {...}, "signature": "<header>..<signature>"}``, the payload being the
  certificate serialised with sorted keys and no white space (RFC 8785 for the value types used:
  strings, integers, booleans and null);
- XML: a ``Signature`` element last, over the exclusive canonical form (xml-exc-c14n, no
  comments) of the document without it.

The public key is published at ``GET /decommission/jwks.json`` and written beside the
certificate files; ``verify_certificate`` checks either form against it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter.directory.schema import CERTIFICATE_XSD, load_schema, q
from adapter.directory.writer import NSMAP
from adapter.errors import GatewayError
from adapter.models import AuditRecord
from adapter.security.keys import SERVICE_KEY_ALG
from adapter.xmlsafe import parse_bytes

DIGEST_FIELDS: Final = ("id", "recorded", "client_id", "organisation_code", "action",
                        "resource_type", "resource_id", "child_ref", "outcome", "override",
                        "purpose_of_use", "detail", "request_id")


class CertificateError(Exception):
    """A certificate does not verify (bad signature, wrong key, malformed, tampered)."""


def canonical_json(value: Any) -> bytes:
    """Return ``value`` as canonical JSON bytes (sorted keys, no white space)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _audit_line(record: AuditRecord) -> bytes:
    """Return one audit record as the digest reads it (one JSON array and a newline)."""
    from adapter.decommission.resources import instant

    values = [getattr(record, name) for name in DIGEST_FIELDS]
    values[1] = instant(record.recorded)
    return orjson.dumps(values) + b"\n"


def audit_digest(session: Session, last_id: int | None = None) -> tuple[int, int, str]:
    """Return (records, last id, ``sha256:<hex>``) of the audit trail in id order, up to
    ``last_id`` (every record when None), read in batches."""
    digest, count, last = hashlib.sha256(), 0, 0
    query = select(AuditRecord).order_by(AuditRecord.id)
    if last_id is not None:
        query = query.where(AuditRecord.id <= last_id)
    for record in session.scalars(query.execution_options(yield_per=5000)):
        digest.update(_audit_line(record))
        count, last = count + 1, record.id
    return count, last, f"sha256:{digest.hexdigest()}"


def sign_detached(payload: bytes, key: ECKey) -> str:
    """Return a compact JWS over ``payload`` with the payload detached (``header..sig``)."""
    header = {"alg": SERVICE_KEY_ALG, "kid": key.kid or key.thumbprint(), "typ": "JOSE",
              "cty": "contactpoint-gateway-certificate"}
    signed = jws.serialize_compact(header, payload, key, algorithms=[SERVICE_KEY_ALG])
    head, _payload, signature = signed.split(".")
    return f"{head}..{signature}"


def verify_detached(signature: str, payload: bytes, key: ECKey) -> str:
    """Check a detached JWS over ``payload``; return the key id it names.

    :raises CertificateError: malformed, or the signature does not verify with ``key``.
    """
    head, sep, tail = signature.partition("..")
    if not sep or not head or not tail:
        raise CertificateError("the signature is not a detached compact JWS")
    from joserfc.util import urlsafe_b64encode

    compact = f"{head}.{urlsafe_b64encode(payload).decode()}.{tail}"
    try:
        token = jws.deserialize_compact(compact, key, algorithms=[SERVICE_KEY_ALG])
    except (JoseError, ValueError) as exc:
        raise CertificateError("the signature does not verify with the service key") from exc
    return str(token.headers().get("kid", ""))


def signed_json(certificate: dict[str, Any], key: ECKey) -> dict[str, Any]:
    """Return the JSON form: the certificate and its detached signature."""
    return {"certificate": certificate,
            "signature": sign_detached(canonical_json(certificate), key)}


# --- XML -------------------------------------------------------------------------------------

def _text(parent: etree._Element, name: str, value: Any) -> None:
    """Append ``<name>value</name>`` unless ``value`` is None (booleans as xs:boolean)."""
    if value is None:
        return
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    etree.SubElement(parent, q(name)).text = text


def _group(parent: etree._Element, name: str, values: dict[str, Any],
           names: Iterable[tuple[str, str]]) -> None:
    """Append an element ``name`` with a child per (key, element name) present in ``values``."""
    group = etree.SubElement(parent, q(name))
    for key, element in names:
        _text(group, element, values.get(key))


TIMETABLE_XML: Final = (("lastUse", "LastUse"), ("runDownAt", "RunDownAt"),
                        ("switchOffAt", "SwitchOffAt"), ("destroyByAt", "DestroyByAt"),
                        ("timeZone", "TimeZone"), ("drill", "Drill"),
                        ("runDownStarted", "RunDownStarted"),
                        ("switchedOff", "SwitchedOff"), ("destroyed", "Destroyed"))
DESTRUCTION_XML: Final = (("started", "Started"), ("finished", "Finished"),
                          ("storage", "Storage"), ("exportJobsRemoved", "ExportJobsRemoved"))
ACK_XML: Final = (("task", "TaskId"), ("client", "Client"), ("clientName", "ClientName"),
                  ("organisation", "Organisation"), ("organisationName", "OrganisationName"),
                  ("status", "Status"), ("shown", "Shown"),
                  ("children", "Children"), ("purged", "Purged"), ("reason", "Reason"),
                  ("delivered", "Delivered"), ("answered", "Answered"),
                  ("reminders", "Reminders"),
                  ("escalated", "Escalated"))
NOTICE_XML: Final = (("subscription", "Subscription"), ("client", "Client"),
                     ("channel", "Channel"), ("delivered", "Delivered"), ("at", "At"),
                     ("detail", "Detail"))
AUDIT_XML: Final = (("records", "Records"), ("lastRecordId", "LastRecordId"),
                    ("digest", "Digest"), ("pseudonymisation", "Pseudonymisation"))


def _destruction(root: etree._Element, destruction: dict[str, Any]) -> None:
    """Append the ``Destruction`` element, with its ``Override`` when there was one."""
    _group(root, "Destruction", destruction, DESTRUCTION_XML[:2])
    group = root[-1]
    override = destruction.get("override")
    if override:
        element = etree.SubElement(group, q("Override"))
        _text(element, "Reason", override["reason"])
        for item in override["overruled"]:
            _text(element, "Overruled", item)
    for key, name in DESTRUCTION_XML[2:]:
        _text(group, name, destruction.get(key))
    exports = destruction.get("operatorExports")
    if exports is not None:
        element = etree.SubElement(group, q("OperatorExports"))
        for key, name in (("exports", "Exports"), ("filesRemoved", "FilesRemoved"),
                          ("filesMissing", "FilesMissing")):
            _text(element, name, exports.get(key))
        for folder in exports.get("folders") or []:
            _text(element, "Folder", folder)


def certificate_element(certificate: dict[str, Any]) -> etree._Element:
    """Return the unsigned ``DestructionCertificate`` element of a certificate."""
    root = etree.Element(q("DestructionCertificate"), nsmap=NSMAP)
    for key, name in (("certificateId", "CertificateId"), ("issued", "Issued"),
                      ("issuer", "Issuer")):
        _text(root, name, certificate[key])
    _group(root, "Timetable", certificate["timetable"], TIMETABLE_XML)
    _destruction(root, certificate["destruction"])
    tables = etree.SubElement(root, q("Tables"))
    for table in certificate["tables"]:
        etree.SubElement(tables, q("Table"), name=table["name"], before=str(table["before"]),
                         after=str(table["after"]))
    acks = etree.SubElement(root, q("Acknowledgements"))
    for ack in certificate["acknowledgements"]:
        _group(acks, "Acknowledgement", ack, ACK_XML)
    notice = etree.SubElement(root, q("FinalNotice"))
    for delivery in certificate["finalNotice"]:
        _group(notice, "Delivery", delivery, NOTICE_XML)
    _group(root, "AuditTrail", certificate["audit"], AUDIT_XML)
    return root


def c14n(root: etree._Element) -> bytes:
    """Return the exclusive canonical form of ``root`` without comments."""
    return etree.tostring(root, method="c14n", exclusive=True, with_comments=False)


def signed_xml(certificate: dict[str, Any], key: ECKey) -> bytes:
    """Return the XML form with its Signature element."""
    root = certificate_element(certificate)
    signature = sign_detached(c14n(root), key)
    element = etree.SubElement(root, q("Signature"), keyId=key.kid or key.thumbprint())
    element.text = signature
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


@dataclass(frozen=True)
class Verified:
    """A certificate that verified: its id, the key that signed it, the audit digest."""

    certificate_id: str
    key_id: str
    audit: dict[str, Any]
    form: str


def _verify_xml(data: bytes, key: ECKey) -> Verified:
    """Verify the XML form.

    :raises CertificateError: not valid against the XSD, or the signature does not verify.
    """
    try:
        root = parse_bytes(data)
    except GatewayError as exc:  # the hardened parser's refusal (syntax, DTD)
        raise CertificateError(f"not well-formed XML: {exc.message}") from exc
    schema = load_schema(CERTIFICATE_XSD)
    if not schema.validate(root):
        raise CertificateError("not valid against schemas/xml/certificate.xsd")
    signature = root.find(q("Signature"))
    if signature is None or not signature.text:
        raise CertificateError("no Signature element")
    root.remove(signature)
    kid = verify_detached(signature.text.strip(), c14n(root), key)
    audit = {key: root.findtext(f"{q('AuditTrail')}/{q(name)}") for key, name in AUDIT_XML}
    return Verified(root.findtext(q("CertificateId")) or "", kid, audit, "xml")


def _verify_json(data: bytes, key: ECKey) -> Verified:
    """Verify the JSON form.

    :raises CertificateError: malformed, or the signature does not verify.
    """
    try:
        document = orjson.loads(data)
        certificate, signature = document["certificate"], document["signature"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise CertificateError("not a certificate in JSON ({certificate, signature})") from exc
    if not isinstance(certificate, dict) or not isinstance(signature, str):
        raise CertificateError("not a certificate in JSON ({certificate, signature})")
    kid = verify_detached(signature, canonical_json(certificate), key)
    return Verified(str(certificate.get("certificateId", "")), kid,
                    dict(certificate.get("audit") or {}), "json")


def verify_certificate(data: bytes, key: ECKey) -> Verified:
    """Verify a certificate in either form (XML when it starts with ``<``).

    :raises CertificateError: it does not verify.
    """
    return _verify_xml(data, key) if data.lstrip()[:1] == b"<" else _verify_json(data, key)


def public_jwks(key: ECKey) -> dict[str, Any]:
    """Return the JWKS publishing the public part of the service key."""
    public = key.as_dict(private=False)
    public.setdefault("kid", key.kid or key.thumbprint())
    return {"keys": [public]}
