"""Identifier and format rules: NHS number, UPN, ContactPoint ID, ODS, URN, GSS, postcode,
practitioners' national professional and SDS numbers.

Every validator returns the normalised value or raises :class:`InvalidIdentifier`, which names
the field and says why, so that API and import errors can point at the offending element
without ever echoing the value itself (identifiers of children are personal data).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from typing import Final


class InvalidIdentifier(ValueError):
    """An identifier or code failed its format or check-digit rule."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# --- NHS number --------------------------------------------------------------------------
# NHS Data Model and Dictionary, "NHS Number": 10 digits, the 10th a modulus 11 check digit
# over the first nine with weights 10..2; a remainder giving check 10 means the number is invalid.

def nhs_number_check_digit(first_nine: str) -> int | None:
    """Return the modulus 11 check digit for nine digits, or None when no valid digit exists."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


_NHS_NUMBER_RE: Final = re.compile(r"\d{10}")


def validate_nhs_number(value: str, field: str = "nhs_number") -> str:
    """Return the NHS number without spaces, or raise InvalidIdentifier.

    :raises InvalidIdentifier: not 10 digits or the check digit does not match.
    """
    digits = value.replace(" ", "")
    if not _NHS_NUMBER_RE.fullmatch(digits):
        raise InvalidIdentifier(field, "an NHS number is 10 digits")
    expected = nhs_number_check_digit(digits[:9])
    if expected is None or expected != int(digits[9]):
        raise InvalidIdentifier(field, "the NHS number check digit (modulus 11) does not match")
    return digits


def make_test_nhs_number(serial: int) -> str:
    """Return a valid NHS number in the never-issued 999 range for synthetic data.

    Serials whose check digit would be 10 (no valid number) move on to the next serial.
    """
    n = serial
    while (check := nhs_number_check_digit(f"999{n % 1_000_000:06d}")) is None:
        n += 1
    return f"999{n % 1_000_000:06d}{check}"


# --- Unique Pupil Number -----------------------------------------------------------------
# DfE "Unique Pupil Numbers (UPN) – A guide for schools and local authorities", Annex A:
# check letter = sum(digit * position for positions 2..13) mod 23, indexing the letter table.
UPN_LETTERS: Final = "ABCDEFGHJKLMNPQRTUVWXYZ"


def upn_check_letter(body: str) -> str:
    """Return the check letter for the 12 characters after it (digits, or a final letter)."""
    total = 0
    for position, char in enumerate(body, start=2):
        total += (int(char) if char.isdigit() else UPN_LETTERS.index(char)) * position
    return UPN_LETTERS[total % 23]


_UPN_RE: Final = re.compile(rf"[{UPN_LETTERS}]\d{{11}}[0-9{UPN_LETTERS}]")


def validate_upn(value: str, field: str = "upn") -> str:
    """Return the UPN upper-cased, or raise InvalidIdentifier.

    :raises InvalidIdentifier: wrong shape or the check letter does not match.
    """
    upn = value.strip().upper()
    if not _UPN_RE.fullmatch(upn):
        raise InvalidIdentifier(
            field,
            "a UPN is a check letter, 11 digits and a final digit (or letter for a temporary UPN)",
        )
    if upn_check_letter(upn[1:]) != upn[0]:
        raise InvalidIdentifier(field, "the UPN check letter does not match")
    return upn


def make_upn(la_number: str, establishment: str, year: int, serial: int) -> str:
    """Return a permanent UPN for an authority, establishment, 2-digit year and serial."""
    body = f"{la_number}{establishment}{year % 100:02d}{serial % 1000:03d}"
    return upn_check_letter(body) + body


# --- ContactPoint ID ---------------------------------------------------------------------
# The gateway's documented format (README, "Identifiers"): "CP", eight Crockford base-32
# symbols, and a Crockford mod-37 check symbol, so that a mistyped id is caught.
CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CROCKFORD_CHECK: Final = CROCKFORD + "*~$=U"
CONTACTPOINT_ID_RE: Final = re.compile(rf"CP[{CROCKFORD}]{{8}}[{re.escape(CROCKFORD_CHECK)}]")


def _crockford_check(body: str) -> str:
    number = 0
    for char in body:
        number = number * 32 + CROCKFORD.index(char)
    return CROCKFORD_CHECK[number % 37]


def make_contactpoint_id(number: int) -> str:
    """Return the ContactPoint ID for a 40-bit number."""
    body = ""
    for _ in range(8):
        number, digit = divmod(number, 32)
        body = CROCKFORD[digit] + body
    return f"CP{body}{_crockford_check(body)}"


def allocate_contactpoint_id() -> str:
    """Return a fresh random ContactPoint ID (uniqueness is enforced by the database)."""
    return make_contactpoint_id(secrets.randbits(40))


def validate_contactpoint_id(value: str, field: str = "contactpoint_id") -> str:
    """Return the ContactPoint ID upper-cased, or raise InvalidIdentifier.

    :raises InvalidIdentifier: wrong shape or check symbol.
    """
    cpid = value.strip().upper()
    if not CONTACTPOINT_ID_RE.fullmatch(cpid):
        raise InvalidIdentifier(
            field, "a ContactPoint ID is 'CP', 8 Crockford base-32 symbols and a check symbol"
        )
    if _crockford_check(cpid[2:10]) != cpid[10]:
        raise InvalidIdentifier(field, "the ContactPoint ID check symbol does not match")
    return cpid


# Resource ids are UUIDv5 of the ContactPoint ID (docs/domain.md: stable, opaque, never the
# identifier itself in a URL), so that re-imports of the same child are idempotent.
RESOURCE_NAMESPACE: Final = uuid.UUID("6f1d4a52-4f0e-5d0b-9a7c-2c1f3e0b8d41")


_NAMESPACE_BYTES: Final = RESOURCE_NAMESPACE.bytes


def resource_id_for(kind: str, key: str) -> str:
    """Return the stable FHIR logical id for a record of ``kind`` with natural key ``key``.

    ``str(uuid.uuid5(RESOURCE_NAMESPACE, f"{kind}/{key}"))`` (RFC 4122 section 4.3), made
    without the UUID object: bulk imports derive several ids per record.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{kind}/{key}".encode(),
                                    usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# --- Organisations -----------------------------------------------------------------------

def validate_ods_code(value: str, field: str = "ods_code") -> str:
    """Return the ODS code upper-cased, or raise InvalidIdentifier.

    ODS organisation codes are 3 to 6 letters and digits with at least one letter (trusts
    ``RXX``, sites ``RXX01``, GP practices a letter and five digits such as ``A81001``).

    :raises InvalidIdentifier: wrong shape.
    """
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{3,6}", code) or not re.search(r"[A-Z]", code):
        raise InvalidIdentifier(field, "an ODS code is 3 to 6 letters and digits, one a letter")
    return code


def validate_gp_practice_code(value: str, field: str = "ods_code") -> str:
    """Return a GP practice ODS code (a letter and five digits), or raise InvalidIdentifier.

    :raises InvalidIdentifier: wrong shape.
    """
    code = validate_ods_code(value, field)
    if not re.fullmatch(r"[A-Z]\d{5}", code):
        raise InvalidIdentifier(field, "a GP practice ODS code is a letter and five digits")
    return code


def validate_urn(value: str, field: str = "urn") -> str:
    """Return a DfE school URN (6 digits, 100000–999999), or raise InvalidIdentifier.

    :raises InvalidIdentifier: wrong shape.
    """
    urn = value.strip()
    if not re.fullmatch(r"[1-9]\d{5}", urn):
        raise InvalidIdentifier(field, "a school URN is 6 digits, not starting with 0")
    return urn


def validate_la_number(value: str, field: str = "la_number") -> str:
    """Return a DfE local authority number (3 digits, 201–938), or raise InvalidIdentifier.

    :raises InvalidIdentifier: wrong shape or out of the DfE range.
    """
    number = value.strip()
    if not re.fullmatch(r"\d{3}", number) or not 201 <= int(number) <= 938:
        raise InvalidIdentifier(field, "a DfE local authority number is 3 digits from 201 to 938")
    return number


# ONS GSS codes of children's services authorities (docs/domain.md): E06 unitary, E08 metropolitan
# borough, E09 London borough, E10 county. E07 districts are not children's services authorities.
CHILDRENS_SERVICES_GSS_RE: Final = re.compile(r"E(06|08|09|10)\d{6}")


def validate_gss_code(value: str, field: str = "gss_code") -> str:
    """Return the GSS code of a children's services authority, or raise InvalidIdentifier.

    :raises InvalidIdentifier: wrong shape or not a children's services authority.
    """
    code = value.strip().upper()
    if re.fullmatch(r"E07\d{6}", code):
        raise InvalidIdentifier(
            field, "E07 district councils are not children's services authorities")
    if not CHILDRENS_SERVICES_GSS_RE.fullmatch(code):
        raise InvalidIdentifier(field, "a children's services authority GSS code is E06, E08, E09 "
                                       "or E10 followed by 6 digits")
    return code


# --- Postcode ----------------------------------------------------------------------------
# Royal Mail / BS7666 postcode format: outward code (area, district) and inward code
# (sector digit and two unit letters, never C, I, K, M, O, V); GIR 0AA is the one exception.
POSTCODE_RE: Final = re.compile(
    r"(GIR ?0AA|[A-PR-UWYZ]"
    r"([0-9]{1,2}|[A-HK-Y][0-9]{1,2}|[0-9][A-HJKPS-UW]|[A-HK-Y][0-9][ABEHMNPRV-Y])"
    r" ?[0-9][ABD-HJLNP-UW-Z]{2})"
)


def validate_postcode(value: str, field: str = "postcode") -> str:
    """Return the postcode upper-cased with one space before the inward code.

    :raises InvalidIdentifier: not a UK postcode.
    """
    compact = re.sub(r"\s+", "", value).upper()
    if not POSTCODE_RE.fullmatch(compact):
        raise InvalidIdentifier(field, "not a UK postcode (e.g. 'SW1A 1AA')")
    return f"{compact[:-3]} {compact[-3:]}"


# Compiled once: these run for every contact of every imported record.
_EMAIL_RE: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SPACES_RE: Final = re.compile(r"\s+")
_PHONE_PUNCTUATION_RE: Final = re.compile(r"[\s()-]")
_PHONE_DIGITS_RE: Final = re.compile(r"0\d{9,10}")
_PHONE_PLAIN_RE: Final = re.compile(r"0[0-9]*(?: [0-9]+)*")


def validate_email(value: str, field: str = "email") -> str:
    """Return the e-mail address if it has the shape local@domain, or raise InvalidIdentifier.

    :raises InvalidIdentifier: not an e-mail address.
    """
    email = value.strip()
    if len(email) > 254 or not _EMAIL_RE.fullmatch(email):
        raise InvalidIdentifier(field, "not an e-mail address")
    return email


def validate_phone(value: str, field: str = "phone") -> str:
    """Return a UK telephone number with single spaces, or raise InvalidIdentifier.

    :raises InvalidIdentifier: not 10 or 11 digits after an optional +44.
    """
    if _PHONE_PLAIN_RE.fullmatch(value) and 10 <= len(value) - value.count(" ") <= 11:
        return value  # already digits in single-spaced groups: what the steps below keep
    phone = _SPACES_RE.sub(" ", value.strip())
    digits = _PHONE_PUNCTUATION_RE.sub("", phone)
    if digits.startswith("+44"):
        digits = "0" + digits[3:]
    if not _PHONE_DIGITS_RE.fullmatch(digits):
        raise InvalidIdentifier(field, "a UK telephone number is 10 or 11 digits starting with 0")
    return phone


# --- practitioners' national numbers ------------------------------------------------------
# The regulators' registration numbers and the Spine Directory Service user id, by the name of
# their UK Core identifier system (https://fhir.hl7.org.uk/Id/<name>, https://fhir.nhs.uk/Id/
# sds-user-id). UK Core R4 2.0.0 leaves Practitioner.identifier unsliced
# (schemas/vendor/uk-core/structuredefinitions/UKCore-Practitioner.xml); the formats are the
# NHS Data Model and Dictionary's: "General Medical Council Reference Number" (7 digits; the
# consultant code is "C" and the GMC number), "General Medical Practitioner PPD Code" ("G" and
# 7 digits; codes starting G6 or G7 are NHSBSA spurious prescriber codes, not a GP), the NMC
# PIN (2 digits, a letter, 4 digits, a letter: "12A3456B"), the HCPC registration number (the
# profession's 2 or 3 letter prefix and up to 6 digits: "SW123456"), the GPhC registration
# number (7 digits) and the SDS user id (the 12-digit Spine user identifier).
PRACTITIONER_NUMBER_FORMATS: Final = {
    "gmc-number": (re.compile(r"C?\d{7}"),
                   "a GMC reference number is 7 digits (or C and 7 digits as a consultant code)"),
    "gmp-number": (re.compile(r"G[0-589]\d{6}"),
                   "a GMP (GP PPD) code is G and 7 digits, not starting G6 or G7 (spurious "
                   "prescriber codes)"),
    "nmc-number": (re.compile(r"\d{2}[A-Z]\d{4}[A-Z]"),
                   "an NMC PIN is 2 digits, a letter, 4 digits and a letter (12A3456B)"),
    "hcpc-number": (re.compile(r"[A-Z]{2,3}\d{4,6}"),
                    "an HCPC registration number is the profession's 2 or 3 letter prefix and "
                    "4 to 6 digits (SW123456)"),
    "gphc-number": (re.compile(r"\d{7}"), "a GPhC registration number is 7 digits"),
    "sds-user-id": (re.compile(r"\d{12}"), "an SDS user id is 12 digits"),
}


def validate_practitioner_number(kind: str, value: str, field: str = "identifier") -> str:
    """Return a practitioner's national number (``kind`` a key of
    PRACTITIONER_NUMBER_FORMATS) as given, or raise InvalidIdentifier: it is kept exactly as
    the regulator issued it, so a lower-case letter or a space is refused, not changed."""
    pattern, rule = PRACTITIONER_NUMBER_FORMATS[kind]
    if not pattern.fullmatch(value):
        raise InvalidIdentifier(field, rule)
    return value
