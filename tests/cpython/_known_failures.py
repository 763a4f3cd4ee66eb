"""Read known_failures.txt: which tests are expected to fail on which loop, and why.

Format (see the header of known_failures.txt): ``[section]`` lines, then one entry a
line, ``<test id pattern> <reason>``, the pattern an fnmatch pattern over ids of the form
``test_events.py::EventLoopTests::test_create_server``.  Whole-line ``#`` comments.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import pathlib
import re
import sys

ALL_ENV = "GLIBLOOP_CPYTHON_ALL"
DEFAULT_PATH = pathlib.Path(__file__).with_name("known_failures.txt")

# Section -> the loops its entries apply to (None: every loop).
SECTIONS: dict[str, frozenset[str] | None] = {
    # Fails with stock asyncio on this machine, so on every loop: not a loop's fault.
    "stock": None,
    # Tests a feature a later issue of glibloop brings (sockets, servers, pipes, ...).
    "later": frozenset({"glibloop"}),
    # Known glibloop gaps or deliberate differences that are not a later feature.
    "glibloop": frozenset({"glibloop"}),
    # Foreign loops, only if someone wants their runs green.
    "uvloop": frozenset({"uvloop"}),
}

# "[later]", or "[later 3.13+]" for entries that apply from that Python on.
_SECTION_LINE = re.compile(
    r"\[(?P<name>[\w-]+)(?:\s+(?P<major>\d+)\.(?P<minor>\d+)"
    r"(?:\+|-(?P<last_major>\d+)\.(?P<last_minor>\d+)))?\]\s*(?:#.*)?"
)


class KnownFailuresError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Entry:
    pattern: str
    reason: str
    section: str
    lineno: int
    min_python: tuple[int, int] = (0, 0)
    last_python: tuple[int, int] = (99, 99)

    def for_this_python(self) -> bool:
        return self.min_python <= sys.version_info[:2] <= self.last_python

    def applies_to(self, loop_name: str) -> bool:
        if not self.for_this_python():
            return False
        loops = SECTIONS[self.section]
        return loops is None or loop_name in loops

    def matches(self, test_id: str) -> bool:
        return fnmatch.fnmatchcase(test_id, self.pattern)

    def describe(self) -> str:
        return f"known failure [{self.section}]: {self.reason}"


def parse(text: str, filename: str = "known_failures.txt") -> list[Entry]:
    entries: list[Entry] = []
    section = None
    min_python, last_python = (0, 0), (99, 99)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{filename}:{lineno}"
        header = _SECTION_LINE.fullmatch(line)
        if header:
            section = header["name"]
            min_python = (int(header["major"]), int(header["minor"])) if header["major"] else (0, 0)
            last_python = (
                (int(header["last_major"]), int(header["last_minor"]))
                if header["last_major"]
                else (99, 99)
            )
            if section not in SECTIONS:
                raise KnownFailuresError(
                    f"{where}: unknown section [{section}]; one of {', '.join(SECTIONS)}"
                )
            continue
        if section is None:
            raise KnownFailuresError(f"{where}: entry before any [section] line")
        pattern, _, reason = line.partition(" ")
        reason = reason.strip()
        if ".py::" not in pattern:
            raise KnownFailuresError(
                f"{where}: {pattern!r} is not a test id like test_x.py::Class::test_y"
            )
        if not reason:
            raise KnownFailuresError(f"{where}: {pattern} has no reason")
        entries.append(Entry(pattern, reason, section, lineno, min_python, last_python))
    return entries


class KnownFailures:
    def __init__(self, entries: list[Entry]):
        self.entries = entries

    @classmethod
    def load(cls, path: os.PathLike | str = DEFAULT_PATH) -> KnownFailures:
        path = pathlib.Path(path)
        return cls(parse(path.read_text(encoding="utf-8"), path.name))

    def lookup(self, test_id: str, loop_name: str) -> Entry | None:
        """The first entry for this loop that lists the test, if any."""
        for entry in self.entries:
            if entry.applies_to(loop_name) and entry.matches(test_id):
                return entry
        return None


def sections_to_run(value: str | None = None) -> frozenset[str]:
    """Sections whose listed tests run anyway (as expected failures), from
    GLIBLOOP_CPYTHON_ALL: "1"/"all" for every section, or a comma list of sections."""
    if value is None:
        value = os.environ.get(ALL_ENV, "")
    value = value.strip().lower()
    if value in ("", "0", "no", "false"):
        return frozenset()
    if value in ("1", "all", "yes", "true"):
        return frozenset(SECTIONS)
    chosen = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = chosen - SECTIONS.keys()
    if unknown:
        raise KnownFailuresError(
            f"{ALL_ENV}={value!r}: unknown section(s) {', '.join(sorted(unknown))};"
            f" use 1, or a comma list of {', '.join(SECTIONS)}"
        )
    return chosen
