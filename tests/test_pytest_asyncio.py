"""A project's own test suite on glibloop, with pytest-asyncio.

Each test here writes a small sample project into a temporary directory
(a conftest.py that selects glibloop, a pytest.ini, async tests and async
fixtures), runs pytest on it in a subprocess, and checks from the
subprocess's JUnit report that every sample test passed and from the
sample tests' own records that each ran on a glibloop.Loop.

Two ways of selecting the loop are covered:

- pytest-asyncio >= 1.4: the ``pytest_asyncio_loop_factories`` hook in
  conftest.py (the recommended way);
- pytest-asyncio 0.23 to 1.3: an ``event_loop_policy`` fixture returning
  ``glibloop.EventLoopPolicy()`` (deprecated since 1.4, still works).
"""

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest_asyncio

import glibloop

HOOK_CONFTEST = '''
import glibloop


def pytest_asyncio_loop_factories(config, item):
    return {"glibloop": glibloop.new_event_loop}
'''

POLICY_CONFTEST = '''
import glibloop
import pytest


@pytest.fixture(scope="session")
def event_loop_policy():
    return glibloop.EventLoopPolicy()
'''

# The sample tests.  Every async test and async fixture records which loop it
# ran on in the file named by SAMPLE_RECORD, one JSON object a line.
SAMPLE_TESTS = '''
import asyncio
import json
import os

import pytest
import pytest_asyncio

import glibloop


def record(what):
    loop = asyncio.get_running_loop()
    with open(os.environ["SAMPLE_RECORD"], "a") as f:
        f.write(json.dumps({"what": what, "loop": type(loop).__module__ + "."
                            + type(loop).__qualname__, "id": id(loop)}) + "\\n")
    return loop


@pytest_asyncio.fixture
async def echo_server():
    record("fixture echo_server")

    async def echo(reader, writer):
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def module_loop():
    return record("fixture module_loop")


@pytest.mark.asyncio
async def test_runs_on_glibloop():
    loop = record("test_runs_on_glibloop")
    assert type(loop) is glibloop.Loop
    assert asyncio.get_running_loop() is loop


@pytest.mark.asyncio
async def test_tasks_and_timers():
    record("test_tasks_and_timers")
    results = await asyncio.gather(*(asyncio.sleep(0.001 * i, result=i) for i in range(10)))
    assert results == list(range(10))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await asyncio.sleep(10)


@pytest.mark.asyncio
async def test_async_fixture_server(echo_server):
    record("test_async_fixture_server")
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server)
    writer.write(b"hello glib\\n")
    assert await reader.readline() == b"HELLO GLIB\\n"
    writer.close()
    await writer.wait_closed()


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_loop_first(module_loop):
    loop = record("test_module_scoped_loop_first")
    assert loop is module_loop and type(loop) is glibloop.Loop


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scoped_loop_second(module_loop):
    loop = record("test_module_scoped_loop_second")
    assert loop is module_loop


def test_sync_test_untouched():
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
'''

PYTEST_INI = '''
[pytest]
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
filterwarnings = error
'''

SAMPLE_TEST_NAMES = {
    "test_runs_on_glibloop", "test_tasks_and_timers", "test_async_fixture_server",
    "test_module_scoped_loop_first", "test_module_scoped_loop_second",
    "test_sync_test_untouched",
}


AUTO_MODE_TESTS = '''
import asyncio

import pytest

import glibloop
from test_sample import record


@pytest.fixture
async def plain_async_fixture():
    return record("fixture plain_async_fixture")


async def test_undecorated(plain_async_fixture):
    loop = record("test_undecorated")
    assert loop is plain_async_fixture and type(loop) is glibloop.Loop
'''


def run_sample(tmp_path, conftest, extra_ini="", extra_tests=None):
    project = tmp_path / "sample"
    project.mkdir()
    (project / "conftest.py").write_text(textwrap.dedent(conftest))
    (project / "pytest.ini").write_text(textwrap.dedent(PYTEST_INI) + extra_ini)
    (project / "test_sample.py").write_text(SAMPLE_TESTS)
    expected_names = set(SAMPLE_TEST_NAMES)
    if extra_tests:
        (project / "test_auto.py").write_text(extra_tests)
        expected_names.add("test_undecorated")
    record = tmp_path / "record.jsonl"
    junit = tmp_path / "junit.xml"
    env = dict(os.environ)
    # The glibloop this suite imports (a build tree or an install), first.
    glibloop_root = os.path.dirname(os.path.dirname(glibloop.__file__))
    env["PYTHONPATH"] = os.pathsep.join(
        [glibloop_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["SAMPLE_RECORD"] = str(record)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
         f"--junitxml={junit}", "."],
        cwd=project, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert f"asyncio-{pytest_asyncio.__version__}" in output, output  # the plugin ran

    suite = ET.parse(junit).getroot()
    if suite.tag == "testsuites":
        suite = suite.find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": len(expected_names), "failures": 0, "errors": 0,
                      "skipped": 0}, output
    names = {case.get("name") for case in suite.iter("testcase")}
    assert names == expected_names, output
    assert f"{len(expected_names)} passed" in output

    records = [json.loads(line) for line in record.read_text().splitlines()]
    return records, output


def check_records(records, extra=()):
    ran = {r["what"] for r in records}
    assert ran == {*extra, "fixture echo_server", "fixture module_loop", "test_runs_on_glibloop",
                   "test_tasks_and_timers", "test_async_fixture_server",
                   "test_module_scoped_loop_first", "test_module_scoped_loop_second"}
    assert {r["loop"] for r in records} == {"glibloop._loop.Loop"}, records
    by_name = {r["what"]: r["id"] for r in records}
    # The async fixture ran on its test's loop; the module-scoped pair shared one.
    assert by_name["fixture echo_server"] == by_name["test_async_fixture_server"]
    assert (by_name["fixture module_loop"] == by_name["test_module_scoped_loop_first"]
            == by_name["test_module_scoped_loop_second"])


def pytest_asyncio_version():
    return tuple(int(p) for p in pytest_asyncio.__version__.split(".")[:2])


def test_loop_factories_hook(tmp_path):
    """The recommended way on pytest-asyncio >= 1.4."""
    assert pytest_asyncio_version() >= (1, 4), pytest_asyncio.__version__
    records, _ = run_sample(tmp_path, HOOK_CONFTEST)
    check_records(records)


def test_loop_factories_hook_auto_mode(tmp_path):
    """The same in auto mode, where undecorated async tests and fixtures run too."""
    records, _ = run_sample(tmp_path, HOOK_CONFTEST, extra_ini="asyncio_mode = auto\n",
                            extra_tests=AUTO_MODE_TESTS)
    check_records(records, extra={"fixture plain_async_fixture", "test_undecorated"})


def test_event_loop_policy_fixture(tmp_path):
    """The way of pytest-asyncio 0.23 to 1.3; 1.4 deprecates it (the warning
    is allowed here, nothing else is)."""
    records, _ = run_sample(
        tmp_path, POLICY_CONFTEST,
        extra_ini="    ignore:Overriding the \"event_loop_policy\" fixture is deprecated"
                  ":pytest.PytestDeprecationWarning\n")
    check_records(records)
