"""docs/events.md, the client contract, checked against the code so that it stays true.

The format rules of docs/events.md this test relies on (keep them when editing the page):

- Each namespace has one section, headed: ## Namespace `/name`. It ends at the next "## "
  heading. Its client -> server events are the first cells of its table rows, each exactly
  one backticked event name (its header and separator rows start otherwise). Events the
  server sends are not rows of a namespace section's table: they have their own section.
- CONNECT refusals are the rows of the one table whose header's first cell starts with
  CONNECT_ERROR; each row's first cell is one quoted text (below).
- A text the server sends is written backticked and in double quotes, `"room is full"`,
  anywhere on the page; <x> marks a part filled in at run time. Every literal piece of such
  a text must occur in the product's source (the .py files of gateway/, services/, shared/).
"""

from __future__ import annotations

import re
from pathlib import Path

from switchboard.gateway.adminui import INVALID, LOCKED
from switchboard.gateway.admission import TOO_MANY_REFUSALS
from switchboard.gateway.connects import KNOWN_REFUSALS
from switchboard.gateway.policing import BANNED, NOT_LOADED, RATE_LIMITED, muted_text
from switchboard.services.game.service import GameService
from switchboard.services.moderation.service import ADMIN_ONLY, ModerationService
from switchboard.services.room.service import RoomService

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
SOURCE_DIRS = ("gateway", "services", "shared")

NAMESPACE_HEADING = re.compile(r"^## Namespace `(/[^`]*)`\s*$")
EVENT_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|")
QUOTED = re.compile(r'`("[^`\n]*")`')
PLACEHOLDER = re.compile(r"<[^<>]*>")


def namespace_sections(doc: str) -> dict[str, list[str]]:
    """Namespace → the lines of its section."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.splitlines():
        if line.startswith("## "):
            match = NAMESPACE_HEADING.match(line)
            current = None
            if match:
                assert match.group(1) not in sections, f"two sections for {match.group(1)}"
                current = sections[match.group(1)] = []
            continue
        if current is not None:
            current.append(line)
    return sections


def documented_events(doc: str) -> list[tuple[str, str]]:
    events = []
    for ns, lines in namespace_sections(doc).items():
        for line in lines:
            match = EVENT_ROW.match(line)
            if match:
                events.append((ns, match.group(1)))
    return events


def refusal_rows(doc: str) -> list[str]:
    """The first cells of the CONNECT refusals table, unquoted."""
    rows: list[str] = []
    in_table = False
    for line in doc.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0].startswith("CONNECT_ERROR"):
            assert not rows, "more than one CONNECT_ERROR table"
            in_table = True
            continue
        if in_table and not set(cells[0]) <= set("-: "):
            match = QUOTED.fullmatch(cells[0])
            assert match, f"a refusal row's first cell must be one quoted text: {line}"
            rows.append(match.group(1)[1:-1])
    return rows


def quoted_texts(doc: str) -> list[str]:
    return [match.group(1)[1:-1] for match in QUOTED.finditer(doc)]


def product_source() -> str:
    return "\n".join(path.read_text(encoding="utf-8")
                     for folder in SOURCE_DIRS
                     for path in sorted((ROOT / folder).rglob("*.py")))


def test_namespace_tables_list_exactly_the_events_the_services_declare() -> None:
    documented = documented_events(DOC)
    assert len(documented) == len(set(documented)), "an event is listed twice"
    declared = {key for owner in (RoomService, GameService, ModerationService)
                for key in owner.schemas()}
    assert set(namespace_sections(DOC)) == {ns for ns, _ in declared}
    assert set(documented) - declared == set(), "documented, but no service declares it"
    assert declared - set(documented) == set(), "declared, but not documented"


def test_connect_refusals_are_the_known_refusals() -> None:
    rows = refusal_rows(DOC)
    assert len(rows) == len(set(rows))
    assert set(rows) == set(KNOWN_REFUSALS)
    assert "Access denied: admin role required" in rows


def test_other_connect_refusals_are_documented() -> None:
    quoted = set(quoted_texts(DOC))
    for text in (TOO_MANY_REFUSALS, INVALID, LOCKED):
        assert text in quoted, text


def test_event_refusal_texts_are_documented() -> None:
    quoted = set(quoted_texts(DOC))
    for text in (RATE_LIMITED, BANNED, NOT_LOADED, ADMIN_ONLY, "room not found",
                 "wrong password", "room is full", "user not online"):
        assert text in quoted, text
    templates = [t for t in quoted if t.startswith("you are muted for ")]
    assert templates, "the mute text is not documented"
    # The template's placeholders, filled in, give the gateway's own texts.
    for template in templates:
        for n, plural in ((5, "s"), (1, "")):
            filled = template.replace("<n>", str(n)).replace("<s>", plural)
            assert filled == muted_text(n), template


def missing_pieces(text: str, source: str) -> list[str]:
    """The literal pieces of a quoted text (placeholders removed) that ``source`` lacks."""
    pieces = [piece for piece in PLACEHOLDER.split(text) if piece.strip()]
    assert pieces, f"a quoted text with nothing literal: {text!r}"
    return [piece for piece in pieces if piece not in source]


def test_every_quoted_server_text_occurs_in_the_source() -> None:
    texts = quoted_texts(DOC)
    assert len(texts) >= 30, "fewer quoted texts than expected: is the convention kept?"
    source = product_source()
    missing = {text: pieces for text in texts if (pieces := missing_pieces(text, source))}
    assert missing == {}


def test_the_source_check_catches_an_invented_text() -> None:
    source = product_source()
    assert missing_pieces("room is full", source) == []
    assert missing_pieces("not a member of room <roomId>", source) == []
    assert missing_pieces("room is overflowing", source) == ["room is overflowing"]
    assert missing_pieces("you are muted for <n> more minutes", source) == [" more minutes"]


def test_readme_links_the_contract() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/events.md)" in readme


def test_doc_stands_alone() -> None:
    assert "EVENTS.md" not in DOC
    assert "../shared" not in DOC
