"""The documentation names only what exists: settings, files, command-line flags, make targets.

visionzoo/serving/config.py's docstring is the full table of the service's environment variables
(the README lists the common ones and points there); these tests hold the table, the settings
classes and the README to one another, and the README's file paths to the tree."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from visionzoo.serving import config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# Variables read outside the settings classes, and the test suite's own.
READ_ELSEWHERE = {"VISIONZOO_ENGINE_CACHE"}  # serving/engines/__init__.py: cache_path
TEST_SUITE = {"VISIONZOO_DATA", "VISIONZOO_FUZZ_EXAMPLES", "VISIONZOO_IMAGE", "VISIONZOO_CONTAINER_REQUIRED",
              "VISIONZOO_CONTAINER_NAME"}
# Folders whose paths the README names and which are all in git (exported_models/ and runs/ are left
# out: the README names versions and runs from git history, and examples of a user's own).
TRACKED_FOLDERS = ("visionzoo/", "benchmarks/", "deploy/", "tests/", ".ci/")


def documented() -> set[str]:
    return set(re.findall(r"^\| (VISIONZOO_[A-Z0-9_<>]+) \|", config.__doc__, flags=re.MULTILINE))


def per_model_settings() -> set[str]:
    """VISIONZOO_<MODEL>_<SETTING>: every field of the per-model overrides."""
    return {f"VISIONZOO_<MODEL>_{name.upper()}" for name in config._ModelOverrides.model_fields}


def test_every_setting_has_a_row_in_the_config_table():
    rows = documented()
    server = {f"VISIONZOO_{name.upper()}" for name in config.ServerSettings.model_fields}
    assert server - rows == set(), "server settings without a row in visionzoo/serving/config.py's docstring"
    for name in per_model_settings():  # the server-wide row (VISIONZOO_<SETTING>, "per model too") is enough
        assert {name, name.replace("<MODEL>_", "")} & rows, name
    assert READ_ELSEWHERE <= rows
    known = server | READ_ELSEWHERE | per_model_settings() | {name.replace("<MODEL>_", "") for name in per_model_settings()}
    assert rows - known == set(), "rows for settings that do not exist"


def unknown_settings(text: str) -> list[str]:
    """VISIONZOO_* names in `text` that match no row of the config table (nor the test suite's own)."""
    models = "|".join(name.upper() for name in config.served_models())
    rows = documented() | per_model_settings()
    patterns = [re.compile("^" + row.replace("<MODEL>", f"(<MODEL>|{models})") + "$") for row in rows]
    named = set(re.findall(r"VISIONZOO_[A-Z0-9_<>]*[A-Z0-9>]", text))
    return sorted(name for name in named - TEST_SUITE if not any(p.match(name) for p in patterns))


def missing_paths(text: str) -> tuple[list[str], int]:
    """Paths under the tracked folders that `text` names and the tree lacks (outputs in ignored folders
    aside); and how many it names."""
    roots = "|".join(re.escape(folder) for folder in TRACKED_FOLDERS)
    named = {match.rstrip(".,:;)") for match in re.findall(rf"(?<![\w/.~-])((?:{roots})[\w./-]+)", text)}
    paths = {path for path in named if not re.search(r"[<>*$]|\.\.\.", path)}
    generated = generated_folders()
    return sorted(path for path in paths if not (REPO / path).exists() and not path.startswith(generated)), len(paths)


def generated_folders() -> tuple[str, ...]:
    """Folders .gitignore names outright (benchmarks/out/ ...): what running things writes, absent
    from a fresh checkout, which the README may name as where results land."""
    lines = (line.strip().lstrip("/") for line in (REPO / ".gitignore").read_text().splitlines())
    return tuple(line for line in lines if line.endswith("/") and not re.search(r"[*?\[!#]", line))


def test_the_readme_names_only_settings_that_exist():
    assert unknown_settings(README) == [], "README names variables visionzoo/serving/config.py does not document"


def test_the_readme_names_only_files_that_exist():
    missing, named = missing_paths(README)
    assert named > 30, "the README's paths were not found: has the pattern gone stale?"
    assert missing == [], "README names files that are not in the tree"


def unknown_flags(text: str) -> tuple[list[str], int]:
    """`visionzoo COMMAND ... --flag` in `text` (commands in prose or code, continued lines joined)
    whose flag that command does not take; and how many flags were checked."""
    from visionzoo.training.__main__ import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    common = {flag for action in parser._actions for flag in action.option_strings}
    unknown, checked = [], 0
    pattern = rf"(?<![\w/-])visionzoo ({'|'.join(commands)})\b([^\n`#]*)"
    for command, rest in re.findall(pattern, text.replace("\\\n", " ")):
        taken = common | {flag for action in commands[command]._actions for flag in action.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            checked += 1
            if flag not in taken:
                unknown.append(f"visionzoo {command} {flag}")
    return unknown, checked


def test_the_readme_uses_only_flags_the_cli_takes():
    unknown, checked = unknown_flags(README)
    assert checked > 30, "the README's commands were not found: has the pattern gone stale?"
    assert unknown == [], "README commands use flags `visionzoo` does not take"


def unknown_make_targets(text: str) -> list[str]:
    """`make TARGET` in `text` (in backticks or a code block) that the Makefile does not define."""
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    named = set(re.findall(r"(?:^|`|\$ )make ([a-z][a-z0-9-]*)", text, flags=re.MULTILINE))
    return sorted(named - targets)


def test_the_readme_uses_only_make_targets_that_exist():
    assert {"serve", "test"} <= set(re.findall(r"`make ([a-z-]+)`", README)), "the README should name its two commands"
    assert unknown_make_targets(README) == []


def test_the_checks_catch_a_stale_name():
    stale = README + ("\nSet `VISIONZOO_NO_SUCH_SETTING`; see `visionzoo/training/multiworker-job.yaml`; run\n"
                      "`visionzoo export runs/x \\\n    --no-such-flag`, then `make no-such-target`.\n")
    assert unknown_settings(stale) == ["VISIONZOO_NO_SUCH_SETTING"]
    assert missing_paths(stale)[0] == ["visionzoo/training/multiworker-job.yaml"]
    assert unknown_flags(stale)[0] == ["visionzoo export --no-such-flag"]
    assert unknown_make_targets(stale) == ["no-such-target"]
