"""Contract tooling: regenerate gen/ from proto/, and check that nothing drifted.

    python scripts/protos.py generate [--allow-breaking]   # rewrite gen/ and the baseline
    python scripts/protos.py check [--root DIR]            # lint, breaking, freshness

The baseline `proto/published.binpb` is the image of the contracts as last published.
`generate` refuses a breaking change against it (a breaking change is a new major version:
copy the package to v2), then rewrites gen/ and advances the baseline so the new contracts
are protected from then on. `check` (run by scripts/test) fails when gen/ or the baseline
does not match proto/, when `buf lint` fails, or when the contracts break the baseline.

`generate --allow-breaking` rewrites the baseline too, so the baseline in the tree alone
cannot catch a deliberate break: `check` also compares the contracts with every version of
the baseline committed before (git history), since each may have been published. A break
that is really meant (say, of a package never released) is written down in
`proto/accepted_breaks.txt`, one line per baseline commit it breaks: the commit, then why.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASELINE = "published.binpb"
ACCEPTED_BREAKS = "accepted_breaks.txt"


def _buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "buf"), *args], cwd=cwd, text=True, capture_output=True)


def _contract_files(proto: Path) -> list[str]:
    return sorted(str(p.relative_to(proto)) for p in (proto / "casino").rglob("*.proto"))


def generate_into(proto: Path, out: Path) -> None:
    """Python messages, gRPC stubs and their type stubs for every casino/** proto."""
    out.mkdir(parents=True, exist_ok=True)
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto}",
        f"-I{wkt}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *_contract_files(proto),
    ]
    result = subprocess.run(cmd, text=True, capture_output=True)
    if result.returncode != 0:
        sys.exit(f"protoc failed:\n{result.stderr}")
    # Regular packages (not namespace ones) so tools and mypy find them without flags.
    for d in [out / "casino", *(p for p in (out / "casino").rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    (out / "casino" / "py.typed").touch()


def build_image(proto: Path, out: Path) -> None:
    result = _buf("build", "--exclude-source-info", "-o", str(out), cwd=proto)
    if result.returncode != 0:
        sys.exit(f"buf build failed:\n{result.stderr}")


def _same_tree(a: Path, b: Path) -> list[str]:
    """Paths that differ between two directory trees (ignoring caches)."""

    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    fa, fb = files(a), files(b)
    differ = sorted(fa ^ fb)
    differ += sorted(f for f in fa & fb if not filecmp.cmp(a / f, b / f, shallow=False))
    return differ


def breaking(proto: Path) -> str | None:
    """The breaking-change report against the baseline, or None when compatible."""
    if not (proto / BASELINE).exists():
        return None
    result = _buf("breaking", "--against", BASELINE, cwd=proto)
    return (result.stdout + result.stderr).strip() if result.returncode != 0 else None


def published_baselines(root: Path) -> list[tuple[str, bytes]] | None:
    """Each distinct earlier version of the baseline in the git history, oldest first, with
    the first commit that had it; None when `root` is not a git checkout."""
    log = subprocess.run(
        ["git", "log", "--reverse", "--format=%H", "--", f"proto/{BASELINE}"],
        cwd=root,
        capture_output=True,
    )
    if log.returncode != 0:
        return None
    versions: dict[bytes, str] = {}
    for commit in log.stdout.decode().split():
        show = subprocess.run(
            ["git", "show", f"{commit}:proto/{BASELINE}"], cwd=root, capture_output=True
        )
        if show.returncode == 0:  # a commit that deleted it has none
            versions.setdefault(show.stdout, commit)
    return [(commit, image) for image, commit in versions.items()]


def accepted_breaks(proto: Path) -> set[str]:
    """The baseline commits (full or abbreviated) whose breaks were meant."""
    path = proto / ACCEPTED_BREAKS
    if not path.exists():
        return set()
    lines = (line.split("#", 1)[0].split() for line in path.read_text().splitlines())
    return {words[0] for words in lines if words}


def historical_breaks(root: Path) -> list[str] | None:
    """A report per earlier published baseline the contracts break (accepted ones aside);
    None when there is no git history to read."""
    proto, history = root / "proto", published_baselines(root)
    if history is None:
        return None
    accepted = accepted_breaks(proto)
    current = (proto / BASELINE).read_bytes() if (proto / BASELINE).exists() else b""
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for commit, image in history:
            if image == current or any(commit.startswith(a) for a in accepted):
                continue
            against = Path(tmp) / f"{commit}.binpb"
            against.write_bytes(image)
            result = _buf("breaking", "--against", str(against), cwd=proto)
            if result.returncode != 0:
                reports.append(
                    f"buf breaking against proto/{BASELINE} as committed in {commit[:12]}:\n"
                    + (result.stdout + result.stderr).strip()
                )
    return reports


def cmd_generate(root: Path, allow_breaking: bool) -> int:
    proto = root / "proto"
    lint = _buf("lint", cwd=proto)
    if lint.returncode != 0:
        print(lint.stdout + lint.stderr, file=sys.stderr)
        return 1
    report = breaking(proto)
    if report and not allow_breaking:
        print(
            "Breaking change against the published contracts; nothing regenerated.\n"
            "Published packages change compatibly only: add a new major version package "
            f"(casino.<service>.v2) instead.\n{report}",
            file=sys.stderr,
        )
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        generate_into(proto, Path(tmp) / "gen")
        shutil.rmtree(root / "gen", ignore_errors=True)
        shutil.copytree(Path(tmp) / "gen", root / "gen")
    build_image(proto, proto / BASELINE)
    print("gen/ and proto/published.binpb regenerated")
    return 0


def cmd_check(root: Path) -> int:
    proto, failures = root / "proto", []
    lint = _buf("lint", cwd=proto)
    if lint.returncode != 0:
        failures.append(f"buf lint:\n{lint.stdout}{lint.stderr}")
    report = breaking(proto)
    if report:
        failures.append(f"buf breaking against proto/{BASELINE}:\n{report}")
    earlier = historical_breaks(root)
    failures.extend(earlier or [])
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate_into(proto, fresh)
        stale = _same_tree(fresh, root / "gen")
        if stale:
            failures.append("gen/ is stale against proto/: " + ", ".join(stale[:10]))
        image = Path(tmp) / BASELINE
        build_image(proto, image)
        if not (proto / BASELINE).exists() or not filecmp.cmp(image, proto / BASELINE, False):
            failures.append(f"proto/{BASELINE} does not match proto/")
    if failures:
        print("\n\n".join(failures), file=sys.stderr)
        print("Run: .venv/bin/python scripts/protos.py generate", file=sys.stderr)
        return 1
    against = "the baseline" if earlier is None else "the baseline and every earlier one committed"
    print(f"contracts: buf lint clean, no breaking change against {against}, gen/ fresh")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["generate", "check"])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--allow-breaking", action="store_true")
    args = parser.parse_args()
    if args.command == "generate":
        return cmd_generate(args.root, args.allow_breaking)
    return cmd_check(args.root)


if __name__ == "__main__":
    sys.exit(main())
