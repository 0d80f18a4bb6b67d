"""The contract gate of the test command, exercised on a copy of the tree: a pristine copy
passes; a stale gen/ or a breaking change to a published proto fails it, also one forced into
the baseline after an earlier baseline was committed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ECHO_PROTO = Path("proto/casino/echo/v1/echo.proto")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    for part in ("proto", "gen", "scripts"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def _protos(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(tree / "scripts" / "protos.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _edit(tree: Path, old: str, new: str) -> None:
    path = tree / ECHO_PROTO
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_pristine_tree_passes(tree: Path) -> None:
    result = _protos(tree, "check")
    assert result.returncode == 0, result.stderr
    assert "gen/ fresh" in result.stdout


def test_proto_changed_without_regenerating_fails_as_stale(tree: Path) -> None:
    _edit(tree, "  string caller = 3;\n}", "  string caller = 3;\n  string tag = 4;\n}")
    result = _protos(tree, "check")
    assert result.returncode == 1
    assert "gen/ is stale" in result.stderr
    assert "echo_pb2.py" in result.stderr


def test_compatible_change_regenerates_and_passes(tree: Path) -> None:
    _edit(tree, "  string caller = 3;\n}", "  string caller = 3;\n  string tag = 4;\n}")
    assert _protos(tree, "generate").returncode == 0
    result = _protos(tree, "check")
    assert result.returncode == 0, result.stderr


def test_breaking_change_fails_check_and_generate_refuses_it(tree: Path) -> None:
    # Renumbering a field breaks every client that has the old stubs.
    _edit(tree, "  int32 delay_ms = 3;", "  int32 delay_ms = 7;")
    generate = _protos(tree, "generate")
    assert generate.returncode == 1
    assert "Breaking change" in generate.stderr
    assert (tree / "gen/casino/echo/v1/echo_pb2.py").read_bytes() == (
        ROOT / "gen/casino/echo/v1/echo_pb2.py"
    ).read_bytes()

    check = _protos(tree, "check")
    assert check.returncode == 1
    assert "buf breaking" in check.stderr
    assert "delay_ms" in check.stderr


def test_breaking_change_fails_even_with_gen_regenerated(tree: Path) -> None:
    # Someone forces regeneration: the committed baseline still catches the break in CI,
    # unless the baseline itself is rewritten, which is then a visible, reviewed change.
    _edit(tree, "  int32 delay_ms = 3;", "  int32 delay_ms = 7;")
    baseline = (tree / "proto/published.binpb").read_bytes()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import protos; "
            "from pathlib import Path; import shutil; "
            "t = Path(sys.argv[2]); shutil.rmtree(t / 'gen'); "
            "protos.generate_into(t / 'proto', t / 'gen')",
            str(tree / "scripts"),
            str(tree),
        ],
        check=True,
        timeout=120,
    )
    assert (tree / "proto/published.binpb").read_bytes() == baseline
    check = _protos(tree, "check")
    assert check.returncode == 1
    assert "buf breaking" in check.stderr
    assert "gen/ is stale" not in check.stderr


def _git(tree: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


def test_a_break_forced_into_the_baseline_fails_against_the_committed_history(
    tree: Path,
) -> None:
    """`generate --allow-breaking` rewrites the baseline, so the tree alone agrees with
    itself; the baselines committed before still catch the break, unless it is written
    down as meant in proto/accepted_breaks.txt."""
    _git(tree, "init", "-q")
    _git(tree, "add", "-A")
    _git(tree, "commit", "-qm", "published")
    published = _git(tree, "rev-parse", "HEAD")
    _edit(tree, "  int32 delay_ms = 3;", "  int32 delay_ms = 7;")
    assert _protos(tree, "generate", "--allow-breaking").returncode == 0
    _git(tree, "commit", "-qam", "a forced break")

    check = _protos(tree, "check")
    assert check.returncode == 1
    assert f"as committed in {published[:12]}" in check.stderr
    assert "delay_ms" in check.stderr

    (tree / "proto/accepted_breaks.txt").write_text(
        f"{published[:10]}  echo's delay_ms renumbered before any client used it\n"
    )
    check = _protos(tree, "check")
    assert check.returncode == 0, check.stderr
    assert "every earlier one committed" in check.stdout


def test_the_test_command_stops_on_a_stale_gen(tree: Path) -> None:
    # The README's test command itself, on the copy (sharing this checkout's virtualenv).
    # Its bootstrap reinstalls only when pyproject.toml changed since the last install;
    # that must not happen here, or the shared virtualenv would point at the copy.
    installed = (ROOT / ".venv" / ".installed").read_text().strip()
    current = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    assert installed == current, "the virtualenv is stale: run scripts/test, not bare pytest"
    (tree / ".venv").symlink_to(ROOT / ".venv")
    shutil.copytree(ROOT / ".dev" / "secrets", tree / ".dev" / "secrets")
    _edit(tree, "  string caller = 3;\n}", "  string caller = 3;\n  string tag = 4;\n}")
    result = subprocess.run(
        ["bash", str(tree / "scripts" / "test")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "gen/ is stale" in result.stderr
    assert "tests: pytest" not in result.stderr
