"""Hardened XML parsing shared by every XML dialect (FHIR XML, directory XML).

External entities, DTD loading and network access are off, and a document that declares a
DTD at all is refused: a DOCTYPE is how XXE, billion-laughs and external-DTD attacks are
carried (OWASP "XML External Entity Prevention Cheat Sheet"), and neither FHIR R4 XML
(xml.html) nor the directory schemas use one. Every failure is a ``BadRequest`` naming the
line and column, so the caller gets a 400 OperationOutcome and never a stack trace.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

from lxml import etree

from adapter.errors import BadRequest

DTD_REFUSED = "XML documents with a DTD (DOCTYPE) or entity declarations are not accepted."

# The prolog (XML 1.0 section 2.8): an optional BOM and XML declaration, then comments,
# processing instructions and white space, then the DOCTYPE if there is one. The atomic
# group and possessive loop never backtrack, so matching stays linear on hostile input.
_DOCTYPE_IN_PROLOG = re.compile(
    rb"(?:\xef\xbb\xbf)?(?:<\?xml[^>]*\?>)?(?>\s|<!--.*?-->|<\?.*?\?>)*+<!DOCTYPE", re.DOTALL)

# libxml2's entity errors (undeclared, external, parameter entity references...).
_ENTITY_ERRORS = frozenset(getattr(etree.ErrorTypes, name) for name in dir(etree.ErrorTypes)
                           if "ENTITY" in name or "PEREF" in name)


def safe_parser(*, remove_comments: bool = False) -> etree.XMLParser:
    """Return an lxml parser with entities, DTDs, network access and huge trees off."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_pis=True,
                           remove_comments=remove_comments)


def _check_no_dtd(tree: etree._ElementTree) -> None:
    """Refuse a parsed document that carries a DTD (the prolog check may miss UTF-16 input).

    :raises BadRequest: the document has a DOCTYPE.
    """
    info = tree.docinfo
    # lxml gives every DOCTYPE, even one naming only an external DTD, an internalDTD node.
    if info.internalDTD is not None or info.public_id:
        raise BadRequest(DTD_REFUSED)


def _syntax_error(error: etree.XMLSyntaxError) -> BadRequest:
    """Return a BadRequest naming the line and column of a well-formedness error."""
    if getattr(error, "code", None) in _ENTITY_ERRORS:  # lxml-stubs lack ``code``
        return BadRequest(DTD_REFUSED)  # an entity only a DTD could have declared
    line, column = error.position
    reason = error.msg.split(", line ")[0] if error.msg else "not well-formed"
    return BadRequest(f"Malformed XML at line {line}, column {column}: {reason}")


def parse_bytes(data: bytes, parser: etree.XMLParser | None = None) -> etree._Element:
    """Parse ``data`` with the hardened parser and return the root element.

    :raises BadRequest: the document declares a DTD or is not well-formed XML.
    """
    if _DOCTYPE_IN_PROLOG.match(data):
        raise BadRequest(DTD_REFUSED)
    try:
        root = etree.fromstring(data, parser if parser is not None else safe_parser())
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from None
    _check_no_dtd(root.getroottree())
    return root


def iterparse_safe(source: str | os.PathLike[str] | IO[bytes], events: Iterable[str] = ("end",),
                   tag: str | Sequence[str] | None = None) -> Iterator[tuple[str, Any]]:
    """Stream ``(event, element)`` pairs like ``lxml.etree.iterparse``, hardened.

    ``tag`` is one tag or a sequence of tags, as lxml takes it. A DTD is refused at the
    first event, before any record is handed out (the DOCTYPE precedes the root element).
    A file named by path is opened here, so that it is closed even when the stream is
    abandoned half-way.

    :raises BadRequest: the document declares a DTD or is not well-formed XML.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            yield from _iterparse(stream, tuple(events), tag)
    else:
        yield from _iterparse(source, tuple(events), tag)


def _iterparse(stream: IO[bytes], events: tuple[str, ...],
               tag: str | Sequence[str] | None) -> Iterator[tuple[str, Any]]:
    """Yield the events of an open binary stream (see ``iterparse_safe``).

    :raises BadRequest: the document declares a DTD or is not well-formed XML.
    """
    parser = etree.iterparse(stream, events=events, tag=tag, resolve_entities=False,
                             no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False, remove_pis=True)
    checked = False
    try:
        for event, element in parser:
            if not checked and isinstance(element, etree._Element):
                _check_no_dtd(element.getroottree())
                checked = True
            yield event, element
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from None
