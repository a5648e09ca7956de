"""Shared fixtures: the real data in ../shared, a CLI runner in a subprocess, temp configs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIGESTMAIL_SHARED", ROOT.parent / "shared"))
NOW = "2026-11-23T08:00:00+00:00"


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared: skipped with a reason in a user's clone, required in CI."""
    if not (SHARED / "digests").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the shared-data tests, but {SHARED} is missing")
        pytest.skip(f"real data folder {SHARED} is absent (it sits beside the project in CI)")
    return SHARED


def cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m digestmail ARGS` in a real subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.pop("DIGESTMAIL_CONFIG", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "digestmail", *map(str, args)], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=120)


def trending(date_line: str, papers: list[tuple[str, str]]) -> str:
    """A digest in the trending-papers page format."""
    head = "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\nbyAK and the research community\n\n"
    return head + date_line + "\n\n" + "".join(f"{t}\n\n{a}\n\n" for t, a in papers)


def write_config(folder: Path, body: str = "", *, inbox: str = "inbox",
                 head: str = "") -> Path:
    """A config in `folder` with a file transport; `body` adds [topics] and [[subscribers]]."""
    (folder / inbox).mkdir(exist_ok=True)
    path = folder / "digestmail.toml"
    path.write_text(textwrap.dedent(head) + textwrap.dedent(f"""
        [store]
        path = "store.sqlite3"
        [sources]
        inbox = "{inbox}"
        [delivery]
        transport = "file"
        outbox = "outbox"
        from = "Trending Papers <papers@example.org>"
        """) + textwrap.dedent(body), encoding="utf-8")
    return path
