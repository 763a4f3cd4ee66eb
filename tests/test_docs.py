"""The documentation cannot rot: every ```python block of docs/*.md and of
README.md runs here, each in a fresh interpreter, and must exit 0 with a
clean stderr; the API reference must name every public name; the
differences page must cover every section and entry of
tests/cpython/known_failures.txt.

A block is run as a script (``snippet.py`` in a temporary directory, which is
also the working directory).  An HTML comment on the line just before the
opening fence changes that; options are separated by spaces:

    <!-- doctest: not-run: REASON -->   shown, never run (keep these rare)
    <!-- doctest: gtk -->               run under a private Xvfb (GTK code)
    <!-- doctest: requires=MOD[,MOD] --> skipped where MOD cannot be imported
    <!-- doctest: continues -->         run after the page's previous block,
                                        as one script (a step-by-step example)
    <!-- doctest: file=NAME -->         not run alone: written as NAME into the
                                        directory of the page's later blocks
                                        (also on ```ini / ```toml blocks)
    <!-- doctest: pytest -->            run with `python -m pytest` instead
    <!-- doctest: alone -->             without the page's earlier file= blocks
    <!-- doctest: timeout=SECONDS -->   default 60

Shell examples are written as ```sh blocks (never run); a ```py or ```python3
fence is refused, so a block cannot escape the run by its spelling.
"""

import ast
import asyncio
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import glibloop
import glibloop.gio
from test_gtk import _child_env, display  # noqa: F401 - display is a fixture (Xvfb)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
KNOWN_FAILURES = ROOT / "tests" / "cpython" / "known_failures.txt"

MAX_NOT_RUN = 6  # a few "before" snippets of libraries that are not installed
DEFAULT_TIMEOUT = 60.0

MARKER = re.compile(r"^\s*<!--\s*doctest:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
KNOWN_OPTIONS = {"gtk", "requires", "continues", "file", "pytest", "timeout", "alone"}

# Output that means a snippet is sloppy even when it exits 0.
DIRTY_STDERR = (
    "Traceback",
    "Exception ignored",
    "ResourceWarning",
    "was never awaited",
    "Task was destroyed",
    "Task exception was never retrieved",
    "Unclosed",
    "unclosed",
    "CRITICAL",
)


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    code: str
    options: dict = field(default_factory=dict)
    not_run: str | None = None
    previous: "Block | None" = None  # the page's previous python block
    lang: str = "python"

    @property
    def id(self):
        return f"{self.page.name}:{self.line}"

    @property
    def file_name(self):
        return self.options.get("file")

    def script(self):
        """The code to run: the chain of `continues` blocks before this one."""
        parts = [self.code]
        block = self
        while "continues" in block.options:
            block = block.previous
            assert block is not None, f"{self.id}: 'continues' on a page's first block"
            parts.insert(0, block.code)
        return "\n".join(parts)


def parse_marker(text, where):
    if text.startswith("not-run:"):
        reason = text[len("not-run:"):].strip()
        return {}, reason
    options = {}
    for word in text.split():
        name, _, value = word.partition("=")
        assert name in KNOWN_OPTIONS, f"{where}: unknown doctest option {name!r}"
        options[name] = value or True
    return options, None


def parse_page(page):
    """Every fenced block of a page: (language, Block).  Markers that are
    not followed by a python block are reported as errors."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, errors = [], []
    pending = None  # (options, not_run, line) of a marker just seen
    previous = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        if marker:
            if pending is not None:
                errors.append(f"{page.name}:{pending[2]}: marker not followed by a code block")
            options, not_run = parse_marker(marker.group(1), f"{page.name}:{i + 1}")
            pending = (options, not_run, i + 1)
            i += 1
            continue
        fence = FENCE.match(line)
        if fence:
            indent, ticks, lang = fence.groups()
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(ticks):
                text = lines[i]
                body.append(text[len(indent):] if text.startswith(indent) else text)
                i += 1
            i += 1  # the closing fence
            lang = lang.lower()
            if lang in ("py", "python3", "py3", "pycon"):
                errors.append(f"{page.name}:{start + 1}: write ```python (run) or ```sh, not ```{lang}")
            options, not_run = (pending or ({}, None, 0))[:2]
            code = "\n".join(body) + "\n"
            if lang == "python":
                block = Block(page, start + 1, code, options, not_run, previous, lang)
                blocks.append(block)
                previous = block
            elif pending is not None and set(options) == {"file"}:
                # A configuration file (```ini, ```toml) the page's later blocks use.
                blocks.append(Block(page, start + 1, code, options, None, None, lang))
            elif pending is not None:
                errors.append(f"{page.name}:{start + 1}: doctest marker on a ```{lang} block")
            pending = None
            continue
        if pending is not None and line.strip():
            errors.append(f"{page.name}:{pending[2]}: marker not directly before a code block")
            pending = None
        i += 1
    return blocks, errors


def all_blocks():
    blocks, errors = [], []
    for page in PAGES:
        found, problems = parse_page(page)
        blocks += found
        errors += problems
    return blocks, errors


BLOCKS, PARSE_ERRORS = all_blocks()
RUNNABLE = [
    b for b in BLOCKS
    if b.lang == "python" and b.not_run is None and (not b.file_name or "pytest" in b.options)
]


# ---------------------------------------------------------------------------
# The conventions themselves


def test_markers_are_well_formed():
    assert not PARSE_ERRORS, "\n".join(PARSE_ERRORS)


def test_docs_have_snippets():
    assert len(RUNNABLE) >= 30, f"only {len(RUNNABLE)} runnable snippets found"
    pages_with_code = {b.page.name for b in RUNNABLE}
    for page in ("README.md", "quickstart.md", "gtk-and-gio.md", "threads.md",
                 "nested-loops.md", "migrating.md", "api.md"):
        assert page in pages_with_code, f"{page} has no runnable snippet"


def test_not_run_blocks_are_rare_and_justified():
    not_run = [b for b in BLOCKS if b.not_run is not None]
    assert len(not_run) <= MAX_NOT_RUN, (
        f"{len(not_run)} blocks are not run (at most {MAX_NOT_RUN}): "
        + ", ".join(b.id for b in not_run)
    )
    for block in not_run:
        assert len(block.not_run) >= 20, f"{block.id}: give a real reason for not running it"
        assert not block.options, f"{block.id}: a not-run block takes no other option"


def test_every_file_block_is_used_by_a_later_run():
    for block in BLOCKS:
        if block.file_name and block not in RUNNABLE:
            later = [b for b in RUNNABLE if b.page == block.page and b.line > block.line]
            assert later, f"{block.id}: file={block.file_name} but nothing runs after it"


def test_snippets_compile():
    """Even the blocks that are not run must be valid Python."""
    for block in BLOCKS:
        if block.lang != "python":
            continue
        try:
            ast.parse(block.script() if block.not_run is None else block.code)
        except SyntaxError as exc:
            pytest.fail(f"{block.id}: {exc}")


# ---------------------------------------------------------------------------
# Running the snippets


def _missing_modules(block):
    missing = []
    for name in filter(None, str(block.options.get("requires", "")).split(",")):
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def _environment(block, request):
    if "gtk" in block.options:
        # test_gtk's settings: X11 only, no accessibility bus, criticals fatal.
        env = _child_env(request.getfixturevalue("display"))
    else:
        env = dict(os.environ)
    # The glibloop under test, wherever it comes from (an install or a stage).
    package_parent = str(Path(glibloop.__file__).resolve().parent.parent)
    paths = [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    for name in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS"):
        env.pop(name, None)
    return env


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_snippet_runs(block, tmp_path, request):
    missing = _missing_modules(block)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, not importable by {sys.executable}")
    for earlier in BLOCKS:  # in page order: a later file of the same name wins
        if "alone" in block.options:
            break
        if earlier.page == block.page and earlier.line < block.line and earlier.file_name:
            (tmp_path / earlier.file_name).write_text(earlier.code, encoding="utf-8")
    name = block.file_name or "snippet.py"
    script = tmp_path / name
    script.write_text(block.script(), encoding="utf-8")
    if "pytest" in block.options:
        command = [sys.executable, "-W", "default::ResourceWarning",
                   "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
    else:
        command = [sys.executable, "-W", "default::ResourceWarning", name]
    timeout = float(block.options.get("timeout", DEFAULT_TIMEOUT))
    try:
        done = subprocess.run(
            command,
            cwd=tmp_path,
            env=_environment(block, request),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.id} did not finish in {timeout:g} s:\n{exc.stdout}\n{exc.stderr}")
    output = f"{block.id}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, output
    for dirt in DIRTY_STDERR:
        assert dirt not in done.stderr, f"{dirt!r} on stderr:\n{output}"
    if "pytest" in block.options:  # every test ran and passed, none skipped
        assert re.search(r"\b\d+ passed\b", done.stdout), output
        assert not re.search(r"\b(skipped|xfailed|xpassed|deselected)\b", done.stdout), output


# ---------------------------------------------------------------------------
# The API reference names every public name


def _api_headings():
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    return text, [line for line in text.splitlines() if line.startswith("#")]


def _documented(name, headings):
    pattern = re.compile(r"(`|\.)" + re.escape(name) + r"\b")
    return any(pattern.search(line) for line in headings)


def public_names():
    names = set(glibloop.__all__) | {"GLIB_VERSION", "EventLoopPolicy", "gio"}
    for name, value in vars(glibloop.gio).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if getattr(value, "__module__", None) == "glibloop.gio":
            names.add(name)
    abstract = set(dir(asyncio.AbstractEventLoop))
    names |= {
        name for name in dir(glibloop.Loop)
        if not name.startswith("_") and name not in abstract
    }
    return names


def test_api_reference_names_every_public_name():
    _, headings = _api_headings()
    names = public_names()
    # Sanity: the introspection found what we know is there.
    assert {"call", "enumerate", "run_application", "priority", "batch_budget"} <= names
    missing = sorted(name for name in names if not _documented(name, headings))
    assert not missing, f"docs/api.md has no heading for: {missing}"


def test_api_reference_covers_members():
    text, headings = _api_headings()
    stream = [n for n in vars(glibloop.gio.SignalStream) if not n.startswith("_")]
    for name in stream + ["__aiter__", "__aenter__"]:
        assert f"`{name}" in text or f".{name}" in text, f"SignalStream.{name} is not in docs/api.md"
    policy = {"get_event_loop_for_context"}
    for name in policy:
        assert name in text, f"EventLoopPolicy.{name} is not in docs/api.md"
    assert any("python -m glibloop" in line for line in headings)


def test_every_all_name_exists():
    for name in glibloop.__all__:
        assert hasattr(glibloop, name), name
    for name in glibloop.gio.__all__:
        assert hasattr(glibloop.gio, name), name


# ---------------------------------------------------------------------------
# The CPython tests we do not pass are all explained


def known_failure_sections():
    sections, current = {}, None
    for raw in KNOWN_FAILURES.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line
            sections[current] = []
            continue
        assert current is not None, f"entry before any section: {line}"
        sections[current].append(line.split()[0])
    return sections


def test_differences_page_covers_known_failures():
    text = (DOCS / "differences.md").read_text(encoding="utf-8")
    sections = known_failure_sections()
    assert sections, "known_failures.txt has no section"
    for section, entries in sections.items():
        assert f"`{section}`" in text, f"docs/differences.md does not mention section {section}"
        for entry in entries:
            assert entry in text, (
                f"docs/differences.md does not explain {entry} (section {section} "
                "of tests/cpython/known_failures.txt)"
            )
    assert "tests/cpython/known_failures.txt" in text


# ---------------------------------------------------------------------------
# Pages link to each other, and the two benchmark tables agree


def test_pages_are_linked():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/README.md" in readme
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name}" in index, f"docs/README.md does not link {page.name}"


def _slugs(page):
    """The anchors GitHub makes for a page's headings."""
    slugs = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


def test_relative_links_resolve():
    link = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")
    for page in PAGES:
        for target, anchor in link.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (page.parent / target) if target else page
            assert path.exists(), f"{page.name}: broken link {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _slugs(path), f"{page.name}: no heading for {target}#{anchor}"


def _table(text, header_start):
    rows = []
    for line in text.splitlines():
        if line.startswith(header_start) or (rows and line.startswith("|")):
            rows.append(line.strip())
        elif rows:
            break
    return rows


def test_benchmark_tables_agree():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    ours = _table(readme, "| workload | glibloop")
    assert len(ours) > 3, "README.md has no benchmark table"
    assert _table(page, "| workload | glibloop") == ours, (
        "docs/benchmarks.md and README.md show different benchmark tables"
    )


if __name__ == "__main__":
    for b in BLOCKS:
        print(b.id, "not-run" if b.not_run else b.options or "")
