"""Named value functions of the field maps: each a pair (to FHIR, from FHIR).

A mapping names a transform with ``transform = "<name>"``; the engine binds it once per
canonical base (``Env``) and calls the bound pair on the hot path. ``forward`` gets the canonical
value (a tuple when ``from`` names several attributes) and returns the FHIR value or None (left
out). ``reverse`` gets the FHIR value and a ``drop`` callback, returns the canonical value, and
calls ``drop(sub_path)`` for every part of the element it does not keep (data minimisation,
docs/domain.md "No case data": the caller is told). Reverse functions raise ``InvalidIdentifier`` or
``ValueNotAccepted`` with a message that never repeats the value (it may be personal data).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from adapter import identifiers, identity, systems
from adapter.mapping.paths import Path
from adapter.models.canonical import FAMILY_NORM_LENGTH, GIVEN_NORM_LENGTH, normalise_name
from adapter.systems import OwnSystems

Drop = Callable[[Path], None]
Forward = Callable[[Any], Any]
Reverse = Callable[[Any, Drop], Any]

ADDRESS_KEY_EXT: Final = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AddressKey"
ADDRESS_KEY_TYPE: Final = "https://fhir.hl7.org.uk/CodeSystem/UKCore-AddressKeyType"
# BS7666 parts carried in Address.line, in the order they are written (BS 7666-1:2006; GeoPlace
# "Data Entry Conventions": SAON, PAON, street, locality, then town and postcode).
LINE_PARTS: Final = ("saon", "paon", "street", "locality")
# Lines without a part label (another system's address) are read in this order by count.
UNLABELLED_LINES: Final = {1: ("paon",), 2: ("paon", "street"), 3: ("paon", "street", "locality"),
                           4: LINE_PARTS}
# UK Core CodeSystem UKCore-NHSNumberVerificationStatus (used by PDS) holds the same concepts as
# UKCore-NHSNumberVerificationStatusEngland under textual codes; PDS also sends the numeric
# codes with that system. The required value set holds only the England system: re-code.
PDS_VERIFICATION: Final = {
    "number-present-and-verified": "01", "number-present-but-not-traced": "02",
    "trace-required": "03", "trace-attempted": "04", "trace-needs-to-be-resolved": "05",
    "trace-in-progress": "06", "number-not-present-and-trace-not-required": "07",
    "trace-postponed": "08",
}
VERIFICATION_DISPLAY: Final = {
    "01": "Number present and verified", "02": "Number present but not traced",
    "03": "Trace required", "04": "Trace attempted - No match or multiple match found",
    "05": "Trace needs to be resolved - (NHS number or patient detail conflict)",
    "06": "Trace in progress", "07": "Number not present and trace not required",
    "08": "Trace postponed (baby under six weeks old)",
}
# v3-Confidentiality codes that restrict disclosure (R restricted, V very restricted).
RESTRICTED: Final = frozenset({"R", "V"})
TEAM_ROLE_DISPLAY: Final = {"lead-professional": "Lead professional",
                            "member": "Team Around the Child member"}


class ValueNotAccepted(ValueError):
    """An inbound value cannot be mapped; the message never contains the value."""


@dataclass(frozen=True)
class Env:
    """What transforms need besides the value: the service's own systems under one base."""

    own: OwnSystems

    @functools.cached_property
    def line_part_url(self) -> str:
        """The URL of the BS7666 address line part extension."""
        return self.own.extension("AddressLinePart")


@dataclass(frozen=True, slots=True)
class Transform:
    """A bound pair of value functions; None means the identity."""

    forward: Forward | None = None
    reverse: Reverse | None = None


TRANSFORMS: dict[str, Callable[[Env], Transform]] = {}


def transform(name: str) -> Callable[[Callable[[Env], Transform]], Callable[[Env], Transform]]:
    """Register a transform factory under ``name``."""
    def register(factory: Callable[[Env], Transform]) -> Callable[[Env], Transform]:
        TRANSFORMS[name] = factory
        return factory
    return register


def _keep(value: Any, _drop: Drop) -> Any:
    """Return the value unchanged (reverse identity)."""
    return value


# --- primitives ---------------------------------------------------------------------------

def parse_date(value: Any) -> dt.date:
    """Return the date of a FHIR date or dateTime (full precision needed).

    :raises ValueNotAccepted: not a full date (the canonical model keeps whole dates).
    """
    if isinstance(value, dt.date):
        return value if not isinstance(value, dt.datetime) else value.date()
    if not isinstance(value, str) or len(value) < 10:
        raise ValueNotAccepted("a full date (YYYY-MM-DD) is needed")
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise ValueNotAccepted("not a valid date") from None


def format_instant(value: dt.datetime) -> str:
    """Return a FHIR instant; naive values are UTC (SQLite drops the zone)."""
    if value.tzinfo is None:
        # What value.replace(tzinfo=dt.UTC).isoformat() gives, without the new datetime.
        return value.isoformat() + "+00:00"
    return value.isoformat()


@transform("string")
def _string(_env: Env) -> Transform:
    """Version numbers and other values written as FHIR strings."""
    return Transform(str, _keep)


@transform("date")
def _date(_env: Env) -> Transform:
    """A date: ``YYYY-MM-DD`` (FHIR R4 datatypes.html#date)."""
    return Transform(dt.date.isoformat, lambda value, _drop: parse_date(value))


@transform("instant")
def _instant(_env: Env) -> Transform:
    """A timestamp with zone: ``meta.lastUpdated`` (FHIR R4 datatypes.html#instant)."""
    return Transform(format_instant, _keep)


@transform("period")
def _period(_env: Env) -> Transform:
    """(start, end) dates as a Period."""
    def forward(value: tuple[dt.date | None, dt.date | None]) -> dict[str, str] | None:
        start, end = value
        period = {}
        if start is not None:
            period["start"] = start.isoformat()
        if end is not None:
            period["end"] = end.isoformat()
        return period or None

    def reverse(period: Any, _drop: Drop) -> tuple[dt.date | None, dt.date | None]:
        start, end = period.get("start"), period.get("end")
        return (parse_date(start) if start else None, parse_date(end) if end else None)
    return Transform(forward, reverse)


@transform("as_list")
def _as_list(_env: Env) -> Transform:
    """One value as a one-item list (HumanName.prefix); further items are not kept."""
    def reverse(items: Any, drop: Drop) -> Any:
        for index in range(1, len(items)):
            drop((index,))
        return items[0] if items else None
    return Transform(lambda value: [value], reverse)


@transform("true_only")
def _true_only(_env: Env) -> Transform:
    """A flag written only when true; absence reads back as false."""
    return Transform(lambda value: True if value else None, lambda value, _drop: bool(value))


# --- codes --------------------------------------------------------------------------------

def _codings(codings: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
    """Return coding dicts for (system, code, display) triples."""
    return [{"system": s, "code": c, "display": d} for s, c, d in codings]


@transform("code")
def _code(_env: Env) -> Transform:
    """A translated code as a FHIR ``code`` (the first target)."""
    return Transform(lambda codings: codings[0][1] if codings else None,
                     lambda code, _drop: [{"code": code}])


@transform("coding")
def _coding(_env: Env) -> Transform:
    """A translated code as one Coding (the first target)."""
    return Transform(lambda codings: _codings(codings[:1])[0] if codings else None,
                     lambda coding, _drop: [coding])


@transform("codeable_concept")
def _codeable_concept(_env: Env) -> Transform:
    """Translated codes as one CodeableConcept; ``text`` is not kept."""
    def reverse(concept: Any, drop: Drop) -> list[Any]:
        if "text" in concept:
            drop(("text",))
        return list(concept.get("coding", []))
    return Transform(lambda codings: {"coding": _codings(codings)} if codings else None, reverse)


@transform("codeable_concepts")
def _codeable_concepts(_env: Env) -> Transform:
    """Translated codes as a list of one CodeableConcept; further concepts are not kept."""
    def reverse(concepts: Any, drop: Drop) -> list[Any]:
        for index in range(1, len(concepts)):
            drop((index,))
        if concepts and "text" in concepts[0]:
            drop((0, "text"))
        return list(concepts[0].get("coding", [])) if concepts else []
    return Transform(lambda codings: [{"coding": _codings(codings)}] if codings else None, reverse)


@transform("nhs_number_verification")
def _nhs_number_verification(_env: Env) -> Transform:
    """NHS number verification status (UK Core Extension-UKCore-NHSNumberVerificationStatus).

    Out: the England code system the required value set holds. In: also PDS's
    ``UKCore-NHSNumberVerificationStatus`` (textual or numeric codes), re-coded; a code of
    neither (e.g. the Welsh AR status) is not kept.
    """
    def forward(code: str) -> dict[str, Any]:
        return {"coding": [{"system": systems.NHS_NUMBER_VERIFICATION_CS, "code": code,
                            "display": VERIFICATION_DISPLAY.get(code, code)}]}

    def reverse(concept: Any, drop: Drop) -> str | None:
        for coding in concept.get("coding", []):
            code = _verification_code(coding.get("system"), coding.get("code"))
            if code is not None:
                return code
        drop(())
        return None
    return Transform(forward, reverse)


def _verification_code(system: Any, code: Any) -> str | None:
    """Return the England verification code for a coding of the England or PDS system."""
    if system == systems.NHS_NUMBER_VERIFICATION_CS and code in VERIFICATION_DISPLAY:
        return str(code)
    if system == systems.NHS_NUMBER_VERIFICATION_CS_PDS:
        return str(code) if code in VERIFICATION_DISPLAY else PDS_VERIFICATION.get(str(code))
    return None


@transform("confidentiality_label")
def _confidentiality_label(_env: Env) -> Transform:
    """Shielded: ``meta.security`` v3-Confidentiality R (docs/domain.md "Security labels")."""
    label = {"system": systems.CONFIDENTIALITY, "code": "R", "display": "restricted"}
    return Transform(lambda shielded: dict(label) if shielded else None,
                     lambda coding, _drop: coding.get("code") in RESTRICTED)


@transform("child_confidentiality_label")
def _child_confidentiality_label(_env: Env) -> Transform:
    """The confidentiality label of the child a record belongs to (outbound only)."""
    label = {"system": systems.CONFIDENTIALITY, "code": "R", "display": "restricted"}
    return Transform(lambda child: dict(label) if child is not None and child.shielded else None)


@transform("redacted_label")
def _redacted_label(_env: Env) -> Transform:
    """Redacted by the policy: ``meta.security`` v3-ObservationValue REDACTED (outbound only)."""
    label = {"system": systems.OBSERVATION_VALUE, "code": "REDACTED", "display": "redacted"}
    return Transform(lambda redacted: dict(label) if redacted else None)


@transform("lead_professional_role")
def _lead_professional_role(env: Env) -> Transform:
    """The lead professional indicator as a participant role of the own team-role system."""
    return Transform(lambda lead: team_role(env, "lead-professional") if lead else None,
                     lambda _concept, _drop: True)


def team_role(env: Env, code: str) -> dict[str, Any]:
    """Return a CodeableConcept of the own team-role code system."""
    return {"coding": [{"system": env.own.code_system("team-role"), "code": code,
                        "display": TEAM_ROLE_DISPLAY[code]}]}


# --- identifiers --------------------------------------------------------------------------

def _validator(check: Callable[[str, str], str], field: str) -> Callable[[Env], Transform]:
    """Return a factory whose reverse validates and normalises an identifier value."""
    def factory(_env: Env) -> Transform:
        def reverse(value: Any, _drop: Drop) -> str:
            if not isinstance(value, str):
                raise ValueNotAccepted(f"{field}: a string is needed")
            return check(value, field)
        return Transform(None, reverse)
    return factory


for _name, _check in (("nhs_number", identifiers.validate_nhs_number),
                      ("upn", identifiers.validate_upn),
                      ("contactpoint_id", identifiers.validate_contactpoint_id),
                      ("ods_code", identifiers.validate_ods_code),
                      ("urn", identifiers.validate_urn),
                      ("gss_code", identifiers.validate_gss_code),
                      ("la_number", identifiers.validate_la_number)):
    TRANSFORMS[_name] = _validator(_check, _name)


@transform("careteam_id")
def _careteam_id(_env: Env) -> Transform:
    """The id of a child's team CareTeam: derived from the ContactPoint ID (outbound only)."""
    return Transform(identity.team_careteam_id)


@transform("lead_role_id")
def _lead_role_id(_env: Env) -> Transform:
    """The id of an eCAF lead professional's PractitionerRole (outbound only)."""
    return Transform(identity.lead_role_id)


@transform("version_of")
def _version_of(_env: Env) -> Transform:
    """``meta.versionId`` of a part: its owner's version (outbound only)."""
    return Transform(lambda owner: str(owner.version) if owner.version is not None else None)


@transform("last_updated_of")
def _last_updated_of(_env: Env) -> Transform:
    """``meta.lastUpdated`` of a part: its owner's timestamp (outbound only)."""
    return Transform(lambda owner: format_instant(owner.last_updated)
                     if owner.last_updated is not None else None)


@transform("search_key")
def _search_key(_env: Env) -> Transform:
    """A family name's search key (``normalise_name``), derived on the way in."""
    return Transform(None, lambda value, _drop: normalise_name(str(value))[:FAMILY_NORM_LENGTH])


@transform("given_search_key")
def _given_search_key(_env: Env) -> Transform:
    """Given names' search key (``normalise_name`` of the names joined), derived on the way in."""
    return Transform(None, lambda value, _drop: normalise_name(" ".join(map(str, value)))
                     [:GIVEN_NORM_LENGTH])
