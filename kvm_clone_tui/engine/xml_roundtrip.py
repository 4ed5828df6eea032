"""Reading and writing untrusted libvirt domain XML (pure: no I/O).

:func:`parse_domain` refuses documents with a DOCTYPE (and so any entity declaration) before
they are parsed into a tree and remembers the namespace prefixes the document used;
:func:`serialize_domain` writes the tree back with those prefixes (``qemu:``, ``libosinfo:``...),
touching no process-wide ElementTree state. :func:`remove_child`, :func:`insert_child` and
:func:`insert_after` edit a tree and keep its indentation. The rewrite of a source VM's
definition into its clone's (``engine/domain_rewrite.py``) is built on these; reading a domain
into the inventory model is ``engine/domain_xml.py``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.parsers import expat

KVMCLONE_NS = "https://github.com/kvm-clone/ns/1"
KVMCLONE_PREFIX = "kvmclone"

_XML_NS = "http://www.w3.org/XML/1998/namespace"


class RewriteError(ValueError):
    """The domain cannot be cloned as it is; the message names the disk or element and why."""


# --- parsing -------------------------------------------------------------------------------


@dataclass
class ParsedDomain:
    root: ET.Element
    root_namespaces: list[tuple[str, str]]  # (prefix, uri) declared on the root element
    prefixes: dict[str, str]  # uri -> the first prefix the document gave it ('' = default)


def _refuse_dtd(*_args: object) -> None:
    raise RewriteError("domain XML with a DOCTYPE or entity declarations is refused")


def parse_domain(xml: str) -> ParsedDomain:
    """Parse untrusted domain XML: no DTD, a <domain> root, namespace prefixes remembered."""
    if not isinstance(xml, str):
        raise RewriteError(f"domain XML must be a string, not {type(xml).__name__}")
    root_namespaces: list[tuple[str, str]] = []
    prefixes: dict[str, str] = {}
    started = False

    def start_ns(prefix: str | None, uri: str | None) -> None:
        if uri:
            prefixes.setdefault(uri, prefix or "")
            if not started:
                root_namespaces.append((prefix or "", uri))

    def start_element(*_args: object) -> None:
        nonlocal started
        started = True

    # First pass with a bare expat parser: it stops at the DOCTYPE before any declaration in it
    # is read, and it reports namespace declarations (ElementTree resolves and forgets them).
    scanner = expat.ParserCreate(namespace_separator="}")
    scanner.StartDoctypeDeclHandler = _refuse_dtd
    scanner.EntityDeclHandler = _refuse_dtd
    scanner.StartNamespaceDeclHandler = start_ns
    scanner.StartElementHandler = start_element
    try:
        scanner.Parse(xml, True)
        root = ET.fromstring(xml)
    except (expat.ExpatError, ET.ParseError) as exc:
        raise RewriteError(f"malformed domain XML: {exc}") from None
    if root.tag != "domain":
        raise RewriteError(f"expected a <domain> document, got <{root.tag}>")
    return ParsedDomain(root, root_namespaces, prefixes)


# --- small tree helpers --------------------------------------------------------------------


def remove_child(parent: ET.Element, child: ET.Element) -> None:
    """Remove ``child`` and keep the indentation of what follows it."""
    children = list(parent)
    index = children.index(child)
    if index > 0:
        children[index - 1].tail = child.tail
    else:
        parent.text = child.tail
    parent.remove(child)


def insert_child(parent: ET.Element, index: int, child: ET.Element) -> None:
    """Insert ``child`` at ``index`` with the indentation its new siblings have."""
    children = list(parent)
    if children:
        if index < len(children):
            child.tail = parent.text if index == 0 else children[index - 1].tail
        else:
            child.tail = children[-1].tail
            children[-1].tail = parent.text if len(children) == 1 else children[-2].tail
    parent.insert(index, child)


def insert_after(parent: ET.Element, tags: tuple[str, ...], child: ET.Element) -> None:
    """Insert ``child`` after the last child whose tag is in ``tags`` (else first)."""
    index = 0
    for position, existing in enumerate(parent):
        if existing.tag in tags:
            index = position + 1
    insert_child(parent, index, child)


# --- serialising with the document's own namespace prefixes ---------------------------------


def _escape_text(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _escape_attribute(value: str) -> str:
    return _escape_text(value).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


class _Writer:
    """Serialise an ElementTree, naming namespaces with the prefixes the source document used."""

    def __init__(self, prefixes: Mapping[str, str]) -> None:
        self.prefixes = {**prefixes, KVMCLONE_NS: KVMCLONE_PREFIX}
        self.parts: list[str] = []

    def _qualify(self, name: str, state: _ElementScope, attribute: bool) -> str:
        """The prefixed name for a Clark-notation ``name``, declaring its namespace if needed."""
        scope = state.scope
        if not name.startswith("{"):
            if not attribute and scope.get("", ""):
                state.declare("", "")  # an unqualified element inside a default namespace
            return name
        uri, local = name[1:].split("}", 1)
        if uri == _XML_NS:
            return f"xml:{local}"
        preferred = self.prefixes.get(uri)
        in_scope = sorted(p for p, u in scope.items() if u == uri and p != preferred)
        for prefix in ([preferred] if preferred is not None else []) + in_scope:
            if scope.get(prefix) == uri and (prefix or not attribute):
                state.used.add(prefix)
                return f"{prefix}:{local}" if prefix else local
        prefix = preferred or ""
        if (
            preferred is None
            or (attribute and not prefix)
            or prefix.lower().startswith("xml")
            or (prefix in state.used and scope.get(prefix) != uri)
        ):
            number = 0
            while f"ns{number}" in scope:
                number += 1
            prefix = f"ns{number}"
        state.declare(prefix, uri)
        state.used.add(prefix)
        return f"{prefix}:{local}" if prefix else local

    def element(
        self,
        element: ET.Element,
        scope: Mapping[str, str],
        initial: list[tuple[str, str]] | None = None,
    ) -> None:
        """Write ``element`` and its subtree (comments and processing instructions are dropped)."""
        if not isinstance(element.tag, str):
            return
        state = _ElementScope(dict(scope))
        for prefix, uri in initial or ():
            if state.scope.get(prefix) != uri:
                state.declare(prefix, uri)
        name = self._qualify(element.tag, state, attribute=False)
        attributes = [
            (self._qualify(key, state, attribute=True), value)
            for key, value in element.attrib.items()
        ]
        parts = self.parts
        parts.append(f"<{name}")
        for prefix, uri in state.declarations:
            xmlns = f"xmlns:{prefix}" if prefix else "xmlns"
            parts.append(f' {xmlns}="{_escape_attribute(uri)}"')
        for key, value in attributes:
            parts.append(f' {key}="{_escape_attribute(value)}"')
        if not element.text and not len(element):
            parts.append("/>")
            return
        parts.append(">")
        if element.text:
            parts.append(_escape_text(element.text))
        for child in element:
            self.element(child, state.scope)
            if child.tail:
                parts.append(_escape_text(child.tail))
        parts.append(f"</{name}>")


@dataclass
class _ElementScope:
    """The namespace bindings in force on one element while it is written."""

    scope: dict[str, str]  # prefix ('' = default) -> uri
    declarations: list[tuple[str, str]] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # prefixes this element's names rely on

    def declare(self, prefix: str, uri: str) -> None:
        self.scope[prefix] = uri
        self.declarations = [(p, u) for p, u in self.declarations if p != prefix]
        self.declarations.append((prefix, uri))


def serialize_domain(parsed: ParsedDomain) -> str:
    writer = _Writer(parsed.prefixes)
    writer.element(parsed.root, {}, initial=parsed.root_namespaces)
    return "".join(writer.parts) + "\n"
