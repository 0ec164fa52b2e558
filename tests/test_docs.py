"""The repository's own documents stand on their own: every citation of a section of
``docs/domain.md`` or ``docs/architecture.md`` in code, tests or docs names a section (or a
phrase) that the document has, and the documents point to nothing outside the repository."""

from __future__ import annotations

import re

from tests.conftest import REPO
from tests.repo_files import project_files

# `docs/domain.md "Shielding"`, `docs/domain.md ("Shielding", "Retention")` ...
CITATION = re.compile(r"(docs/(?:domain|architecture)\.md)[`\s,;(:]*"
                      r"((?:\"[^\"]{1,80}\"[\s,;and]*)+)")
OUTSIDE = re.compile(r"DOMAIN\.md|ARCHITECTURE\.md|STYLE\.md|\.\./shared|\b[Ii]ssue \d+")


def plain(text: str) -> str:
    """Return ``text`` lower-cased, without Markdown emphasis or code marks, spaces collapsed."""
    return " ".join(re.sub(r"[*_`]", "", text).lower().split())


def citable(doc: str) -> tuple[list[str], str]:
    """Return the headings of ``doc`` and its whole text, both plain."""
    text = (REPO / doc).read_text()
    headings = [plain(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)]
    return headings, plain(text)


def citations() -> list[tuple[str, str, str]]:
    """Return (file, document, cited name) of every section citation in the repository."""
    found = []
    for name in project_files():
        if name == "tests/test_docs.py":  # names the documents as data, cites nothing
            continue
        path = REPO / name
        if path.suffix not in (".py", ".md", ".toml", ".xsd", ".json", ".sh") or not path.is_file():
            continue
        for doc, names in CITATION.findall(path.read_text(errors="replace")):
            found += [(name, doc, cited) for cited in re.findall(r"\"([^\"]+)\"", names)]
    return found


def resolves(doc: str, cited: str) -> bool:
    """Return True when ``cited`` starts a heading of ``doc`` or is a phrase in it."""
    headings, text = citable(doc)
    return any(h.startswith(plain(cited)) for h in headings) or plain(cited) in text


def test_every_cited_section_exists() -> None:
    """Every citation found resolves; the README and architecture notes do cite sections."""
    found = citations()
    assert {("README.md", "docs/domain.md"), ("docs/architecture.md", "docs/domain.md")} \
        <= {(name, doc) for name, doc, _ in found}
    assert [f"{name}: {doc} {cited!r}" for name, doc, cited in found
            if not resolves(doc, cited)] == []


def test_a_citation_of_a_missing_section_is_caught() -> None:
    """Names that are neither a heading nor a phrase of the document do not resolve."""
    assert resolves("docs/domain.md", "Other organisations'\n  numbers")
    assert resolves("docs/architecture.md", "Security model")
    assert not resolves("docs/domain.md", "Shielding of adults")
    assert not resolves("docs/architecture.md", "Read replicas per authority")


def test_domain_notes_have_the_sections_code_cites() -> None:
    """The rules code comments cite by name are sections of docs/domain.md, with sources."""
    headings, text = citable("docs/domain.md")
    for section in ("shielding", "sensitive services", "other organisations' numbers",
                    "retention", "no case data", "who used it", "security labels",
                    "eCAF assessment references", "identifiers and code systems", "sources"):
        assert any(h.startswith(section.lower()) for h in headings), section
    assert "information database (england) regulations 2007" in text
    assert "nhs data dictionary" in text and "uk core" in text


def test_docs_point_to_nothing_outside_the_repository() -> None:
    """The README and docs/ name no reference file outside the repository and no issue."""
    docs = sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))
    assert "docs/domain.md" in docs
    for name in ("README.md", *docs):
        assert not OUTSIDE.findall((REPO / name).read_text()), name
