"""The wheel carries the templates, and an installed copy runs the example from any folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "digestmail"
    # Build from a copy, so a stale build/ or store in the work tree cannot leak into the wheel.
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "outbox", "*.sqlite3*", "build", "dist",
                                                             "__pycache__", ".pytest_cache", ".hypothesis"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("digestmail-*.whl")
    return path


def test_wheel_contains_the_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for template in ("digest.mjml.j2", "digest.txt.j2", "subject.txt.j2"):
        assert f"digestmail/templates/{template}" in names
    assert not any(n.startswith("tests/") for n in names)


def test_installed_copy_runs_the_example(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)  # dependencies come from this Python
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    zipfile.ZipFile(wheel).extractall(site)  # a wheel is a zip laid out for site-packages
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    shutil.copy(ROOT / "config.example.toml", work / "config.example.toml")
    code = "import digestmail.render as r; print(r.__file__); print(r.default_templates())"
    where = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=work, check=True).stdout
    assert str(site) in where and str(ROOT) not in where  # the installed copy, with its own templates
    result = subprocess.run([str(python), "-m", "digestmail", "--config", "config.example.toml", "run"],
                            capture_output=True, text=True, cwd=work, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "sent 2 emails" in result.stdout
    assert len(list((work / "outbox").glob("*.eml"))) == 2
