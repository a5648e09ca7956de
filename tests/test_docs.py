"""The README is the manual: its two quickstart commands exist, CI runs the test one verbatim."""

from __future__ import annotations

import re

from .conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
MAIN_COMMAND = "python3 -m pip install . && python3 -m digestmail --config config.example.toml run"
TEST_COMMAND = 'python3 -m pip install -e ".[test]" && python3 -m pytest'


def quickstart_blocks() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_quickstart_has_exactly_the_two_commands():
    assert quickstart_blocks() == [MAIN_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in [line.strip() for line in ci.splitlines()]


def test_readme_documents_every_command_and_config_key():
    from digestmail.cli import cli
    from digestmail.config import SCHEMA, SUBSCRIBER_KEYS

    for name in cli.commands:
        assert f"digestmail {name}" in README, name
    for table, keys in SCHEMA.items():
        for key in keys:
            dotted = f"{table}.{key}" if table else key
            assert f"`{dotted}`" in README, dotted
    for key in SUBSCRIBER_KEYS:
        assert f"`subscribers[].{key}`" in README, key
