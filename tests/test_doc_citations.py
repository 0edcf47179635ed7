"""Every test the docs cite exists: a claim in docs/security.md (or a row of deployment.md's failure
table) that names a test which was renamed or moved backs nothing.

A citation is ``tests/<file>.py`` or ``tests/<file>.py::<test>`` (a parametrised id's brackets
ignored); the file must exist and define the test. Found one stale name when first run
(security.md's state-table claim, moved with the sans-I/O connection).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/security.md", "docs/deployment.md", "docs/protocol.md", "docs/performance.md", "docs/architecture.md")
CITATION = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")


def citations(text: str) -> set[tuple[str, str]]:
    return {(m.group(1), m.group(2) or "") for m in CITATION.finditer(text)}


def stale(cited: set[tuple[str, str]], root: Path) -> list[str]:
    """The citations of ``cited`` that name no file, or no test in their file, under ``root``."""
    out = []
    for path, name in sorted(cited):
        source = root / path
        if not source.is_file():
            out.append(f"{path}: no such file")
        elif name and not re.search(rf"^(?:async )?def {name}\b", source.read_text(), re.MULTILINE):
            out.append(f"{path}::{name}: no such test")
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_a_doc_cites_exists(doc: str) -> None:
    cited = citations((ROOT / doc).read_text())
    assert cited or doc == "docs/architecture.md", f"{doc} cites no test: is the pattern still right?"
    assert not stale(cited, ROOT), stale(cited, ROOT)


def test_a_stale_citation_is_found() -> None:
    text = "see `tests/test_doc_citations.py::test_a_stale_citation_is_found` and tests/test_nope.py, " \
           "tests/test_doc_citations.py::test_renamed_away"
    assert stale(citations(text), ROOT) == [
        "tests/test_doc_citations.py::test_renamed_away: no such test", "tests/test_nope.py: no such file",
    ]
