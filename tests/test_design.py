"""Every "invariant n" and "DESIGN §n" the code and tests cite resolves to docs/DESIGN.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "DESIGN.md"
CITING = ("pagewal", "tests", "bench", "scripts")

_SECTION = re.compile(r"^## §(\d+) ", re.MULTILINE)
_INVARIANT = re.compile(r"^(\d+)\. \*\*", re.MULTILINE)
# "invariant 4", "invariants 1 and 4", "invariants 1, 2, 3, 7, 8", "Invariant 1 and 4"
_CITED_INVARIANTS = re.compile(r"\b[Ii]nvariants? (\d+(?:(?:, | and | or )\d+)*)")
_CITED_SECTIONS = re.compile(r"DESIGN(?:\.md)? §(\d+)")


def _design_text() -> str:
    return DESIGN.read_text(encoding="utf-8")


def _invariants_section(text: str) -> str:
    start = text.index("## §2 ")
    return text[start:text.index("\n## ", start + 1)]


def _citations() -> list[tuple[str, int, str, int]]:
    """(file, line, kind, number) for every citation in the project's sources."""
    found = []
    for folder in CITING:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == Path(__file__).name:
                continue
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                where = str(path.relative_to(ROOT))
                for match in _CITED_INVARIANTS.finditer(line):
                    for number in re.findall(r"\d+", match.group(1)):
                        found.append((where, line_no, "invariant", int(number)))
                for match in _CITED_SECTIONS.finditer(line):
                    found.append((where, line_no, "section", int(match.group(1))))
    return found


def test_design_numbers_its_invariants_one_to_eight_and_its_sections_one_to_seven() -> None:
    text = _design_text()
    assert [int(n) for n in _INVARIANT.findall(_invariants_section(text))] == list(range(1, 9))
    assert [int(n) for n in _SECTION.findall(text)] == list(range(1, 8))


def test_every_invariant_and_section_the_code_cites_exists_in_the_design() -> None:
    text = _design_text()
    invariants = {int(n) for n in _INVARIANT.findall(_invariants_section(text))}
    sections = {int(n) for n in _SECTION.findall(text)}
    citations = _citations()
    assert len(citations) > 20  # the scan finds the citations the code is known to make
    dangling = [(where, line, kind, number) for where, line, kind, number in citations
                if number not in (invariants if kind == "invariant" else sections)]
    assert not dangling, f"citations with nothing behind them in docs/DESIGN.md: {dangling}"


def test_a_citation_of_a_missing_invariant_is_found() -> None:
    cited = [int(n) for m in _CITED_INVARIANTS.finditer("(invariants 1, 4 and 9)")
             for n in re.findall(r"\d+", m.group(1))]
    assert cited == [1, 4, 9]
    assert [int(m) for m in _CITED_SECTIONS.findall("see DESIGN §12 and DESIGN.md §3")] == [12, 3]
