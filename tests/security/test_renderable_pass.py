"""``adapter.wellformed.well_formed``, the one pass that clears a rendered resource before the
path-building shape walk: it never clears a resource the walk finds a flaw in (whatever JSON,
hostile strings and element names included), and it clears what the gateway renders."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.wellformed import MAX_STRING, require_renderable, shape_flaws, well_formed

EDGE_TEXTS = ["", " ", "\t\n", "\u0000", "Ann\u0001e", "\u000bX", "\ufffe", "\uffff", "a\ud800",
              "\u00a0", "Zoë", "日本", "\U0001f600", "  padded  ", "Ann\nSmith", "_given",
              '"', '\\', 'a"b', "null", "{}", "[]", '["a"]', "\u2028", "\u3000", "\u0085"]
TEXTS = st.one_of(st.sampled_from(EDGE_TEXTS), st.text(max_size=12))
SCALARS = st.one_of(TEXTS, st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXTS, inner, max_size=4)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(TEXTS, JSON, max_size=5))
def test_it_never_clears_a_flawed_resource(body: dict[str, Any]) -> None:
    """Cleared means the walk finds nothing; a flaw the walk finds is never cleared."""
    resource = {"resourceType": "Patient", **body}
    if well_formed(resource):
        assert shape_flaws(resource) == []
    if shape_flaws(resource):
        assert not well_formed(resource)


def test_it_clears_a_rendered_patient_and_refuses_each_kind_of_flaw() -> None:
    """A plain Patient is cleared; each flaw the walk knows is left to it."""
    patient = {"resourceType": "Patient", "id": "a", "active": True,
               "name": [{"family": "Smith", "given": ["Ann", "Zoë"]}],
               "meta": {"security": [{"system": "http://x", "code": "R"}]}}
    assert well_formed(patient)
    require_renderable(patient)
    flawed = [{"id": None}, {"id": ""}, {"id": " "}, {"name": []}, {"name": [{}]},
              {"id": "a\u0001"}, {"a\u0001": 1}, {"": 1}, {"name": [None]},
              {"text": "x" * (MAX_STRING + 1)}]
    for change in flawed:
        assert not well_formed({**patient, **change}), change


def test_it_reads_json_tokens_inside_strings_as_text() -> None:
    """The pass splits the JSON text at quotes: a string that looks like JSON structure
    ("null", "{}", brackets) is a string, and U+2028 or a non-breaking space inside text is
    no blank; a quote or a backslash in a value is left to the walk, which clears it."""
    for text in ("null", "{}", "[]", "[a]", "x\u2028y", "Ann\u00a0Smith", "Zoë"):
        assert well_formed({"resourceType": "Patient", "id": "a", "text": text}), text
    for text in ('say "hi"', "back\\slash"):
        resource = {"resourceType": "Patient", "id": "a", "text": text}
        assert not well_formed(resource)
        require_renderable(resource)
