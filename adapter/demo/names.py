"""The built-in word lists of the demo data (``adapter/demo/*.txt``) and fictional contacts.

Contact details use only ranges reserved for fiction, so that no generated record can reach a
real person: Ofcom's telephone numbers for TV and radio drama, and the ``example`` domains and
the ``.example`` top-level domain of RFC 2606.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from random import Random
from typing import Final

# Ofcom, "Telephone numbers for use in TV and radio drama programmes": 1,000 numbers each.
DRAMA_LANDLINES: Final = (
    "0113 496 0{:03d}", "0114 496 0{:03d}", "0115 496 0{:03d}", "0116 496 0{:03d}",
    "0117 496 0{:03d}", "0118 496 0{:03d}", "0121 496 0{:03d}", "0151 496 0{:03d}",
    "0161 496 0{:03d}", "0191 498 0{:03d}", "01632 960{:03d}",
)
DRAMA_LONDON: Final = "020 7946 0{:03d}"
DRAMA_MOBILE: Final = "07700 900{:03d}"
# RFC 2606 second-level domains reserved for documentation: personal e-mail addresses.
PERSONAL_MAIL_DOMAINS: Final = ("example.com", "example.net", "example.org")
# Letters that may end a postcode (Royal Mail: never C, I, K, M, O, V in the inward code).
POSTCODE_UNIT_LETTERS: Final = "ABDEFGHJLNPQRSTUWXYZ"
STREET_SUFFIXES: Final = (
    "Road", "Street", "Lane", "Avenue", "Close", "Drive", "Way", "Crescent", "Gardens", "Grove",
    "Place", "Terrace", "Court", "Walk", "Rise", "Mews", "View", "Row",
)
HOUSE_NAMES: Final = ("Rose Cottage", "The Old Forge", "Orchard House", "Ivy Cottage",
                      "The Laurels", "Meadow View", "Holly Lodge", "The Old School House")


@dataclass(frozen=True)
class NameLists:
    """Given names by sex, family names and street names, each without duplicates."""

    female: tuple[str, ...]
    male: tuple[str, ...]
    family: tuple[str, ...]
    streets: tuple[str, ...]


def _read_list(filename: str) -> tuple[str, ...]:
    """Return the non-comment lines of a packaged word list, in order, without duplicates."""
    text = resources.files("adapter.demo").joinpath(filename).read_text(encoding="utf-8")
    words = (line.strip() for line in text.splitlines())
    return tuple(dict.fromkeys(w for w in words if w and not w.startswith("#")))


@cache
def name_lists() -> NameLists:
    """Return the packaged word lists (read once)."""
    return NameLists(female=_read_list("given_female.txt"), male=_read_list("given_male.txt"),
                     family=_read_list("surnames.txt"), streets=_read_list("streets.txt"))


def ascii_slug(text: str, separator: str = ".") -> str:
    """Return ``text`` as lower-case ASCII letters and digits, words joined by ``separator``."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = "".join(c if c.isalnum() else " " for c in folded.replace("'", "").lower())
    return separator.join(cleaned.split())


def mobile_number(rng: Random) -> str:
    """Return a fictional mobile number (Ofcom drama range)."""
    return DRAMA_MOBILE.format(rng.randrange(1000))


def personal_email(rng: Random, given: str, family: str) -> str:
    """Return a fictional personal e-mail address on an RFC 2606 domain."""
    local = f"{ascii_slug(given)}.{ascii_slug(family)}"
    if rng.random() < 0.5:
        local += str(rng.randrange(1, 100))
    return f"{local}@{rng.choice(PERSONAL_MAIL_DOMAINS)}"


def postcode(rng: Random, area: str, districts: tuple[int, ...]) -> str:
    """Return a postcode in ``area``: a district, a sector digit and two unit letters."""
    unit = rng.choice(POSTCODE_UNIT_LETTERS) + rng.choice(POSTCODE_UNIT_LETTERS)
    return f"{area}{rng.choice(districts)} {rng.randrange(10)}{unit}"


def street_name(rng: Random, names: NameLists) -> str:
    """Return a street name such as "Meadow Close"."""
    return f"{rng.choice(names.streets)} {rng.choice(STREET_SUFFIXES)}"
