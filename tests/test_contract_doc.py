"""docs/data-contract.md lists every table and column the code enforces, with its kind."""

from __future__ import annotations

from pathlib import Path

from fedcrm.data.contract import INTERACTION_KINDS, PURPOSES, TABLES

DOC = (Path(__file__).parents[1] / "docs" / "data-contract.md").read_text(encoding="utf-8")


def test_every_column_is_documented_with_its_kind_and_class():
    for table in TABLES.values():
        assert f"### `{table.name}`" in DOC
        for column in table.columns:
            row = (
                f"| `{column.name}` | {column.kind.value} | {'yes' if column.required else 'no'} |"
            )
            assert row in DOC, f"{table.name}.{column.name} is missing or stale in the doc"
            assert column.identifier.value in DOC


def test_closed_vocabularies_are_documented():
    for word in (*PURPOSES, *INTERACTION_KINDS):
        assert f"`{word}`" in DOC or word in DOC
