"""Statements in the docs that contradicted the code once, held to it now.

Each test pins a kind of contradiction that was found and fixed (issue 25):
defaults in the settings table, the CLI's flags and commands, the REST
API's query parameters, and the worked example's message shapes.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, fields
from pathlib import Path

import orjson

from tandem.cli import build_parser
from tandem.errors import TandemError
from tandem.ot.delta import Delta
from tandem.protocol import ack_message, op_message, snapshot_message
from tandem.records import OpRecord
from tandem.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


def _documented_default(name: str) -> str:
    found = re.search(rf"^\| `{name}` \| `[^`]+` \| (.+?) \|", OPERATIONS, re.MULTILINE)
    assert found, name
    return found.group(1).strip().strip("`")


def test_every_default_in_the_settings_table_is_the_codes() -> None:
    for f in fields(Settings):
        if f.default is MISSING:
            continue  # computed (node_id): described in words
        value = f.default
        if isinstance(value, tuple):
            expected = ",".join(value) if value else '""'
        elif isinstance(value, bool):
            expected = str(value).lower()
        elif value == "":
            expected = '""'
        else:
            expected = str(value)
        documented = _documented_default(f.name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert float(documented) == value, f.name  # "0" documents 0.0
        else:
            assert documented == expected, f.name


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_and_every_serve_flag_is_in_the_readme() -> None:
    commands = _subcommands()
    for name in commands:
        assert f"`tandem {name}" in README or f"**`tandem {name}" in README, name
    serve_line = next(
        line for line in README.splitlines() if line.startswith("- **`tandem serve`**")
    )
    for action in commands["serve"]._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert flag in serve_line, flag


def test_the_rest_ops_query_parameters_are_in_the_readme() -> None:
    from tandem.server.app import create_app

    app = create_app(Settings(database_url="memory://", jwt_secret="x" * 32))
    schema = app.openapi()["paths"]["/api/docs/{doc}/ops"]["get"]["parameters"]
    names = {p["name"] for p in schema if p["in"] == "query"}
    assert names == {"from", "limit"}
    line = next(line for line in README.splitlines() if "/ops?from=" in line)
    for name in names:
        assert f"{name}=" in line, name


def test_the_worked_example_messages_have_the_servers_fields() -> None:
    shapes = {
        "snapshot": set(snapshot_message("d", 0, Delta(), [], "write")),
        "ack": set(ack_message("d", 1, 1, None)),
        "op": set(op_message(OpRecord("d", 1, Delta(), "c@u", 1, "u", 0.0))),
    }
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    section = protocol.split("## A worked example", 1)[1].split("\n## ", 1)[0]
    messages = [
        orjson.loads(line[3:]) for line in section.splitlines() if line.startswith(("←A ", "←B "))
    ]
    assert len(messages) >= 6
    for message in messages:
        if message["type"] in shapes:
            assert set(message) == shapes[message["type"]], message


def _storage_bullet(name: str) -> str:
    section = OPERATIONS.split("## Storage", 1)[1].split("\n## ", 1)[0]
    return next(b for b in section.split("\n- ") if b.startswith(f"**{name}**"))


def test_every_table_the_migrations_create_is_in_operations_md() -> None:
    migrations = ROOT / "src" / "tandem" / "storage" / "migrations"
    for dialect, bullet in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        text = _storage_bullet(bullet)
        sql = "\n".join(p.read_text() for p in sorted((migrations / dialect).glob("*.sql")))
        tables = set(re.findall(r"CREATE TABLE (\w+)", sql)) | {"schema_migrations"}
        missing = sorted(t for t in tables if f"`{t}`" not in text)
        assert not missing, (dialect, missing)


def _error_classes() -> list[type[TandemError]]:
    import tandem.errors as errors

    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.TandemError)
    ]


def test_the_error_tables_close_codes_are_the_codes() -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(ERR_[A-Z_]+)` \|.*\| ([^|]+) \|$", protocol, re.MULTILINE)
    }
    for cls in _error_classes():
        if cls.code not in rows:
            continue  # never sent (ERR_DOCUMENT, ERR_CONFLICT, ERR_FENCED): said in prose
        said = rows[cls.code]
        if cls.close_code is None:
            assert "stays open" in said or said == "—", (cls.__name__, said)
        else:
            assert f"closed with {cls.close_code}" in said, (cls.__name__, said)
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    errors_section = architecture.split("## Errors", 1)[1]
    for code in {c.close_code for c in _error_classes() if c.close_code is not None}:
        assert str(code) in errors_section, code


def _settings_row(name: str) -> str:
    found = re.search(rf"^\| `{name}` \|.*$", OPERATIONS, re.MULTILINE)
    assert found, name
    return found.group(0)


def test_every_settings_row_says_what_zero_does() -> None:
    from tandem.settings import _MINIMUM, NO_LIMIT_AT_ZERO

    for name, (least, _why) in _MINIMUM.items():
        row = _settings_row(name)
        above_zero = "Above 0" in row or "Longer than" in row  # presence_timeout
        said = f"At least {least:g}" in row or (least < 1 and above_zero)
        assert said and "refused" in row, (name, least)
    intro = OPERATIONS.split("## Configuration", 1)[1].split("| setting |", 1)[0]
    for name in NO_LIMIT_AT_ZERO:
        assert re.search(r"no (rate )?limit", _settings_row(name)), name
        assert f"`{name}`" in intro, name


def test_the_docs_commands_help_names_every_action() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summary = next(c.help for c in commands._choices_actions if c.dest == "docs")
    docs = commands.choices["docs"]
    actions = next(a for a in docs._actions if isinstance(a, argparse._SubParsersAction))
    for name in actions.choices:
        assert summary is not None and name in summary, name
