"""Identifier rules against known-good and known-bad values (docs/domain.md "Identifiers")."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapter import identifiers as ids
from adapter.identifiers import InvalidIdentifier

Validator = Callable[..., str]

# (validator, value, normalised result)
GOOD: list[tuple[Validator, str, str]] = [
    # NHS Digital's published examples of valid NHS numbers.
    (ids.validate_nhs_number, "9434765919", "9434765919"),
    (ids.validate_nhs_number, "4010232137", "4010232137"),
    (ids.validate_nhs_number, "943 476 5919", "9434765919"),
    (ids.validate_nhs_number, ids.make_test_nhs_number(0), ids.make_test_nhs_number(0)),
    # UPN: check letter by hand, 2*2 + 1*4 + 2*5 + 2*9 + 6*10 + 1*13 = 109, 109 mod 23 = 17 -> U.
    (ids.validate_upn, "U201200026001", "U201200026001"),
    (ids.validate_upn, " u201200026001 ", "U201200026001"),
    # Temporary UPN: serial 01 and letter B (table index 1, weight 13): 108 + 13 = 121 -> 6 -> G.
    (ids.validate_upn, "G20120002601B", "G20120002601B"),
    (ids.validate_contactpoint_id, "CP000000000", "CP000000000"),
    (ids.validate_contactpoint_id, "cpzzzzzzzzf", "CPZZZZZZZZF"),
    (ids.validate_ods_code, "A81001", "A81001"),
    (ids.validate_ods_code, "rxx", "RXX"),
    (ids.validate_ods_code, "RXX01", "RXX01"),
    (ids.validate_gp_practice_code, "Y02345", "Y02345"),
    (ids.validate_urn, "100000", "100000"),
    (ids.validate_urn, "999999", "999999"),
    (ids.validate_la_number, "201", "201"),
    (ids.validate_la_number, "938", "938"),
    (ids.validate_gss_code, "E06000001", "E06000001"),
    (ids.validate_gss_code, "E08000025", "E08000025"),
    (ids.validate_gss_code, "E09000033", "E09000033"),
    (ids.validate_gss_code, "e10000034", "E10000034"),
    (ids.validate_postcode, "SW1A 1AA", "SW1A 1AA"),
    (ids.validate_postcode, "sw1a1aa", "SW1A 1AA"),
    (ids.validate_postcode, " m1  1ae ", "M1 1AE"),
    (ids.validate_postcode, "B33 8TH", "B33 8TH"),
    (ids.validate_postcode, "CR2 6XH", "CR2 6XH"),
    (ids.validate_postcode, "DN55 1PT", "DN55 1PT"),
    (ids.validate_postcode, "W1A 0AX", "W1A 0AX"),
    (ids.validate_postcode, "EC1A 1BB", "EC1A 1BB"),
    (ids.validate_postcode, "GIR 0AA", "GIR 0AA"),
    (ids.validate_phone, "020 7946 0000", "020 7946 0000"),
    (ids.validate_phone, "+44 20  7946 0000", "+44 20 7946 0000"),
    (ids.validate_phone, "07700 900123", "07700 900123"),
    (ids.validate_phone, "(01632) 960-123", "(01632) 960-123"),
    (ids.validate_email, "jo.bloggs@example.org", "jo.bloggs@example.org"),
    (ids.validate_email, " a+b@mail.example ", "a+b@mail.example"),
]

# (validator, value, words the reason must contain)
BAD: list[tuple[Validator, str, str]] = [
    (ids.validate_nhs_number, "9434765918", "check digit"),
    (ids.validate_nhs_number, "4010232138", "check digit"),
    # The weighted sum of 100000001 leaves remainder 1: check digit 10, no valid number.
    (ids.validate_nhs_number, "1000000010", "check digit"),
    (ids.validate_nhs_number, "943476591", "10 digits"),
    (ids.validate_nhs_number, "94347659190", "10 digits"),
    (ids.validate_nhs_number, "943476591X", "10 digits"),
    (ids.validate_upn, "A201200026001", "check letter"),
    (ids.validate_upn, "T20120002601B", "check letter"),
    (ids.validate_upn, "I201200026001", "a UPN is"),  # I is not in the check letter table
    (ids.validate_upn, "U20120002600", "a UPN is"),
    (ids.validate_upn, "U2012000260O1", "a UPN is"),
    (ids.validate_contactpoint_id, "CP000000001", "check symbol"),
    (ids.validate_contactpoint_id, "CP0000000I0", "'CP'"),  # I is not Crockford base-32
    (ids.validate_contactpoint_id, "XP000000000", "'CP'"),
    (ids.validate_contactpoint_id, "CP00000000", "'CP'"),
    (ids.validate_ods_code, "123", "one a letter"),
    (ids.validate_ods_code, "A8100123", "3 to 6"),
    (ids.validate_ods_code, "A8-001", "3 to 6"),
    (ids.validate_gp_practice_code, "RXX01", "a letter and five digits"),
    (ids.validate_urn, "012345", "6 digits"),
    (ids.validate_urn, "12345", "6 digits"),
    (ids.validate_urn, "1234567", "6 digits"),
    (ids.validate_la_number, "200", "201 to 938"),
    (ids.validate_la_number, "939", "201 to 938"),
    (ids.validate_la_number, "20A", "201 to 938"),
    (ids.validate_gss_code, "E07000223", "E07 district"),
    (ids.validate_gss_code, "W06000015", "E06, E08, E09"),
    (ids.validate_gss_code, "E0600001", "E06, E08, E09"),
    (ids.validate_postcode, "Q1 1AA", "not a UK postcode"),
    (ids.validate_postcode, "SW1A 1AC", "not a UK postcode"),
    (ids.validate_postcode, "EC1", "not a UK postcode"),
    (ids.validate_postcode, "12345", "not a UK postcode"),
    (ids.validate_phone, "12345", "10 or 11 digits"),
    (ids.validate_phone, "+1 202 555 0100", "10 or 11 digits"),
    (ids.validate_phone, "020 7946 00000 1", "10 or 11 digits"),
    (ids.validate_email, "jo.bloggs", "not an e-mail"),
    (ids.validate_email, "jo@localhost", "not an e-mail"),
    (ids.validate_email, "jo bloggs@example.org", "not an e-mail"),
    (ids.validate_email, "a" * 250 + "@example.org", "not an e-mail"),
]


def _case_id(case: tuple[Validator, str, str]) -> str:
    """Name a case by its validator and value."""
    return f"{case[0].__name__}:{case[1].strip()[:20]}"


@pytest.mark.parametrize("case", GOOD, ids=_case_id)
def test_valid_values_are_normalised(case: tuple[Validator, str, str]) -> None:
    """A known-good value passes and comes back normalised."""
    validator, value, expected = case
    assert validator(value) == expected


@pytest.mark.parametrize("case", BAD, ids=_case_id)
def test_invalid_values_are_refused_with_the_field_and_reason(
        case: tuple[Validator, str, str]) -> None:
    """A known-bad value raises InvalidIdentifier naming the field and why, not the value."""
    validator, value, reason = case
    with pytest.raises(InvalidIdentifier) as info:
        validator(value, field="entry.identifier")
    assert str(info.value).startswith("entry.identifier: ")
    assert info.value.field == "entry.identifier"
    assert reason in info.value.reason
    assert value.strip() not in str(info.value)


@pytest.mark.parametrize("validator", sorted({case[0] for case in BAD}, key=lambda v: v.__name__),
                         ids=lambda v: v.__name__)
def test_default_field_name_is_the_column(validator: Validator) -> None:
    """Without a field argument, the error names the canonical column."""
    value = next(case[1] for case in BAD if case[0] is validator)
    with pytest.raises(InvalidIdentifier) as info:
        validator(value)
    expected = validator.__name__.removeprefix("validate_")
    expected = {"gp_practice_code": "ods_code"}.get(expected, expected)
    assert info.value.field == expected


def test_nhs_check_digit_rule() -> None:
    """Weights 10..2, 11 - (sum mod 11); 11 becomes 0 and 10 means no valid number."""
    assert ids.nhs_number_check_digit("943476591") == 9
    assert ids.nhs_number_check_digit("100000001") is None
    weights = range(10, 1, -1)
    zero = next(f"{n:09d}" for n in range(10**8, 10**8 + 200)
                if sum(int(d) * w for d, w in zip(f"{n:09d}", weights, strict=True)) % 11 == 0)
    assert ids.nhs_number_check_digit(zero) == 0


def test_test_nhs_numbers_are_in_the_reserved_range_and_valid() -> None:
    """Synthetic NHS numbers start 999 and pass the check for every serial."""
    for serial in range(0, 2000, 7):
        number = ids.make_test_nhs_number(serial)
        assert number.startswith("999")
        assert ids.validate_nhs_number(number) == number


def test_make_upn_embeds_the_authority_and_validates() -> None:
    """A made UPN has the LA number at characters 2-4 and a valid check letter."""
    upn = ids.make_upn("938", "4001", 2027, 1234)
    assert upn[1:4] == "938"
    assert upn[4:8] == "4001"
    assert upn[8:10] == "27"
    assert ids.validate_upn(upn) == upn


def test_contactpoint_ids_round_trip_and_catch_typos() -> None:
    """Made and allocated ids validate; changing any one symbol is caught by the check."""
    for number in (0, 1, 31, 32, 123_456_789, 2**40 - 1):
        cpid = ids.make_contactpoint_id(number)
        assert ids.validate_contactpoint_id(cpid) == cpid
        for position in range(2, 10):
            other = ids.CROCKFORD[(ids.CROCKFORD.index(cpid[position]) + 1) % 32]
            typo = cpid[:position] + other + cpid[position + 1:]
            with pytest.raises(InvalidIdentifier):
                ids.validate_contactpoint_id(typo)
    allocated = ids.allocate_contactpoint_id()
    assert ids.validate_contactpoint_id(allocated) == allocated


def test_resource_ids_are_stable_and_distinct() -> None:
    """resource_id_for is a pure function of kind and key, and kinds do not collide."""
    assert ids.resource_id_for("Patient", "CP000000000") == \
        ids.resource_id_for("Patient", "CP000000000")
    assert ids.resource_id_for("Patient", "CP000000000") != \
        ids.resource_id_for("Practitioner", "CP000000000")
    assert "CP000000000" not in ids.resource_id_for("Patient", "CP000000000")
