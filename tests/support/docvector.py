"""Reading the worked examples of docs/protocol.md: the fenced blocks tagged ``vector=<name>`` or ``example=<label>``.

Both examples (one-to-one and room) are read from the document itself, so an
edit that breaks an example, or a code change that breaks the document, fails
their tests. Block names are unique across the document; each example has its
own section between BEGIN and END markers.
"""

from __future__ import annotations

import functools
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from securechat import crypto
from securechat.encoding import b64decode
from tests.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "protocol.md"
BLOCK = re.compile(r"^```(\w+) vector=([\w-]+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@functools.cache
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(begin: str, end: str) -> str:
    """The part of the document between two markers."""
    text = doc_text()
    start = text.index(begin)
    return text[start : text.index(end, start)]


def names_in(text: str) -> set[str]:
    """The names of the vector blocks in ``text``."""
    return {name for _lang, name, _body in BLOCK.findall(text)}


@functools.cache
def blocks() -> dict[str, str]:
    """Every vector block of the document by name."""
    found: dict[str, str] = {}
    for _lang, name, body in BLOCK.findall(doc_text()):
        assert name not in found, f"vector block {name!r} appears twice in {DOC}"
        found[name] = body.strip("\n")
    return found


def hexblock(name: str) -> bytes:
    """A hex block; spaces and newlines are layout only."""
    return bytes.fromhex(re.sub(r"\s+", "", blocks()[name]))


def b64block(name: str) -> bytes:
    return b64decode(blocks()[name].strip())


@functools.cache
def private_key(who: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(blocks()[f"{who}-private"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@functools.cache
def public_key(who: str) -> rsa.RSAPublicKey:
    return crypto.load_public_key_pem(blocks()[f"{who}-public"])


def doc_example(label: str) -> str:
    """The body of the code block tagged ``example=<label>`` (a frame, one line), its lines stripped."""
    match = re.search(rf"```\w+ example={re.escape(label)}\n(.*?)\n *```", doc_text(), re.DOTALL)
    assert match is not None, f"no example={label} block in {DOC}"
    return "\n".join(line.strip() for line in match.group(1).splitlines())
