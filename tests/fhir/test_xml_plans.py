"""The FHIR XML writer's plans (adapter.fhir.xml ``_plan``): what is decided once per key order
of a type must not let a later object with the same keys through unchecked."""

from __future__ import annotations

import itertools

import pytest

from adapter.fhir import xml as fhir_xml
from adapter.fhir.xml import dumps_resource


def patient(**elements: object) -> dict[str, object]:
    """Return a Patient with ``elements``."""
    return {"resourceType": "Patient", **elements}


def test_a_planned_key_order_still_checks_each_value() -> None:
    """The same keys planned by a valid object: a wrong value is still refused, as it is
    when the writer first meets those keys."""
    good = patient(gender="male", active=True, name=[{"family": "Smith", "given": ["Ann"]}])
    assert b'<family value="Smith"/>' in dumps_resource(good)
    for bad, message in ((patient(gender=1), "does not fit"),
                         (patient(active="yes"), "does not fit"),
                         (patient(name=[{"family": "Smith", "given": ["Ann", 2]}]),
                          r"Patient\.name\[0\]\.given\[1\]"),
                         (patient(name=[{"family": "Smith", "given": []}]), "non-empty array"),
                         (patient(name={"family": "Smith"}), "non-empty object")):
        with pytest.raises(ValueError, match=message):
            dumps_resource(bad)


def test_a_companion_or_an_attribute_makes_another_plan() -> None:
    """A primitive with its ``_`` companion, and an element with an id, are written as such
    after the same element without them was planned."""
    extension = {"extension": [{"url": "https://example.org/x", "valueCode": "a"}]}
    plain = dumps_resource(patient(name=[{"family": "Smith"}]))
    with_companion = dumps_resource(patient(name=[{"family": "Smith", "_family": extension}]))
    with_id = dumps_resource(patient(name=[{"id": "n1", "family": "Smith"}]))
    assert b'<family value="Smith"/>' in plain
    assert (b'<family value="Smith"><extension url="https://example.org/x">'
            b'<valueCode value="a"/></extension></family>') in with_companion
    assert b'<name id="n1"><family value="Smith"/></name>' in with_id
    with pytest.raises(ValueError, match="id must be a string"):
        dumps_resource(patient(name=[{"id": 1, "family": "Smith"}]))


def test_escaping_does_not_depend_on_the_plan() -> None:
    """The same keys written once plain and once with characters to escape."""
    assert b'<family value="Smith"/>' in dumps_resource(patient(name=[{"family": "Smith"}]))
    escaped = dumps_resource(patient(name=[{"family": 'A&B <"C">\tD'}]))
    assert b'<family value="A&amp;B &lt;&quot;C&quot;&gt;&#9;D"/>' in escaped


def test_key_orders_beyond_the_limit_are_written_without_a_plan_kept() -> None:
    """Past ``_MAX_PLANS`` orders of a type (here every order of six HumanName keys), objects
    are planned each time: the same output, and the type's plans stop growing."""
    table = fhir_xml.resource_table("Patient").fields["name"][1]
    values = {"family": "F", "text": "T", "use": "usual", "prefix": ["P"], "suffix": ["S"],
              "given": ["G"]}
    expected = dumps_resource(patient(name=[values]))
    orders = list(itertools.permutations(values))
    assert len(orders) > fhir_xml._MAX_PLANS
    for order in orders:
        assert dumps_resource(patient(name=[{key: values[key] for key in order}])) == expected
    assert len(table.plans) == fhir_xml._MAX_PLANS


def test_remembered_texts_follow_the_values() -> None:
    """A small object of strings written from a remembered text (``_write_remembered``):
    each value still written as it is, a value of another type still refused, an escaped
    value never taken from a plain one, and past ``_MAX_TEXTS`` values the key order is
    written as any other."""
    count = fhir_xml._MAX_TEXTS + 6
    identifiers = [{"system": "https://example.org/id", "value": f"v{n}"} for n in range(count)]
    for _round in range(2):
        text = dumps_resource(patient(identifier=identifiers)).decode()
        assert text.count('<system value="https://example.org/id"/>') == count
        assert all(f'<value value="v{n}"/></identifier>' in text for n in range(count))
    coding = {"system": "https://example.org/cs", "code": "a"}
    assert b'<code value="a"/>' in dumps_resource(patient(maritalStatus={"coding": [coding]}))
    escaped = dumps_resource(patient(maritalStatus={"coding": [{**coding, "code": "a&b"}]}))
    assert b'<code value="a&amp;b"/>' in escaped
    with pytest.raises(ValueError, match=r"maritalStatus\.coding\[0\]\.code"):
        dumps_resource(patient(maritalStatus={"coding": [{**coding, "code": 1}]}))
