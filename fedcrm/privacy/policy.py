"""De-identification policies: which action applies to each column of each released table.

Every column of every released table (customers, transactions, interactions) needs a
:class:`ColumnRule` with one action:

- ``drop``: the column is removed;
- ``pseudonymise``: keyed HMAC-SHA256 pseudonym (:mod:`fedcrm.privacy.pseudonyms`); the
  customer id of every table maps through one pseudonym map, so joins still work;
- ``generalise``: replaced by a coarser value from a named generaliser
  (:mod:`fedcrm.privacy.generalisation`), written to ``output``;
- ``keep``: passed through unchanged (to ``output``, default the same name).

Rules are validated when they are built: direct identifiers may only be dropped, customer keys
only pseudonymised or dropped, and a policy holds at most one rule per table and column. Applying
a policy is :mod:`fedcrm.privacy.deidentification`.

Policy files are TOML::

    name = "store-17"        # optional; shown in reports
    base = "default"         # optional: start from DeidentificationPolicy.default(); rules
                             # below replace the default rule of the same table and column
    [[rules]]
    table = "customers"      # customers | transactions | interactions
    column = "wechat_openid"
    action = "drop"          # drop | pseudonymise | generalise | keep
    [[rules]]
    table = "customers"
    column = "city"
    action = "generalise"
    generaliser = "region"   # required with generalise; see GENERALISERS
    output = "region"        # optional; default: the column's own name
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fedcrm.data.contract import TABLES, IdentifierClass
from fedcrm.errors import ConfigError
from fedcrm.privacy.generalisation import get_generaliser

__all__ = ["RELEASED_TABLES", "Action", "ColumnRule", "DeidentificationPolicy"]

RELEASED_TABLES: tuple[str, ...] = ("customers", "transactions", "interactions")


class Action(StrEnum):
    DROP = "drop"
    PSEUDONYMISE = "pseudonymise"
    GENERALISE = "generalise"
    KEEP = "keep"


_A, _I = Action, IdentifierClass
_ALLOWED = {_I.DIRECT: (_A.DROP,), _I.CUSTOMER_KEY: (_A.PSEUDONYMISE, _A.DROP)}
_ALLOWED[_I.RECORD_KEY] = (_A.DROP, _A.PSEUDONYMISE)
# (generaliser, output) of the default policy; other quasi-identifiers are dropped by default.
_DEFAULT_GENERALISERS = {
    ("customers", "birth_date"): ("age_band", "age_band"),
    ("customers", "age_band"): ("age_band_label", "age_band"),
    ("customers", "city"): ("region", "region"),
    ("customers", "region"): ("region", "region"),
    ("customers", "postcode"): ("postcode_prefix", "postcode_prefix"),
    ("customers", "joined_at"): ("month", "joined_at"),
    ("customers", "gender"): ("gender", "gender"),
}
# Customers output order of the default policy (what the feature builder expects).
_CUSTOMER_ORDER = "customer_id gender age_band region postcode_prefix member_tier joined_at"


@dataclass(frozen=True)
class ColumnRule:
    """What happens to one column of one released table; validated at construction."""

    table: str
    column: str
    action: Action
    generaliser: str | None = None
    output: str | None = None

    def __post_init__(self) -> None:
        if self.action not in set(Action):
            valid = ", ".join(Action)
            raise ValueError(f"unknown action {self.action!r}; valid: {valid}")
        object.__setattr__(self, "action", Action(self.action))
        if self.table not in RELEASED_TABLES:
            raise ValueError(f"unknown table {self.table!r}; valid: {', '.join(RELEASED_TABLES)}")
        if not isinstance(self.column, str) or not self.column:
            raise ValueError("column must be a non-empty name")
        where = f"{self.table}.{self.column}"
        if (self.action is _A.GENERALISE) != (self.generaliser is not None):
            raise ValueError(f"{where}: a generaliser is required with, and only with, generalise")
        if self.generaliser is not None:
            get_generaliser(self.generaliser)
        if self.action is _A.DROP and self.output is not None:
            raise ValueError(f"{where}: a dropped column has no output")
        if self.action is not _A.DROP and self.output is None:
            object.__setattr__(self, "output", self.column)
        contract = TABLES[self.table]
        if self.column in contract.column_names:
            ident = contract.column(self.column).identifier
            ok = _ALLOWED.get(ident, tuple(Action))
            if self.action not in ok:
                use = " or ".join(ok)
                raise ValueError(f"{where} is a {ident.value} identifier: use {use}")


@dataclass(frozen=True)
class DeidentificationPolicy:
    """An ordered set of column rules, at most one per (table, column)."""

    rules: tuple[ColumnRule, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        keys = [(r.table, r.column) for r in self.rules]
        twice = sorted({f"{t}.{c}" for t, c in keys if keys.count((t, c)) > 1})
        if twice:
            raise ValueError(f"more than one rule for {', '.join(twice)}")

    def rule_for(self, table: str, column: str) -> ColumnRule | None:
        return next((r for r in self.rules if (r.table, r.column) == (table, column)), None)

    def rules_for(self, table: str) -> tuple[ColumnRule, ...]:
        return tuple(r for r in self.rules if r.table == table)

    def missing_contract_columns(self) -> tuple[str, ...]:
        """Contract columns of the released tables that no rule covers, as "table.column"."""
        have = {(r.table, r.column) for r in self.rules}
        cols = [(t, c) for t in RELEASED_TABLES for c in TABLES[t].column_names]
        return tuple(f"{t}.{c}" for t, c in cols if (t, c) not in have)

    def with_rules(self, *rules: ColumnRule, name: str | None = None) -> DeidentificationPolicy:
        """A copy where ``rules`` replace rules of the same (table, column) or are appended."""
        new = {(r.table, r.column): r for r in rules}
        kept = [new.pop((r.table, r.column), r) for r in self.rules]
        return DeidentificationPolicy((*kept, *new.values()), name or self.name)

    def digest(self) -> str:
        """SHA-256 of the rules, to show in audit records which policy was applied."""
        rows = [[r.table, r.column, r.action, r.generaliser, r.output] for r in self.rules]
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    @classmethod
    def default(cls) -> DeidentificationPolicy:
        """Every contract column by its identifier class: customer key → pseudonymise, direct
        and record keys → drop, quasi → generalise (or drop), others → keep."""
        rules: list[ColumnRule] = []
        for table in RELEASED_TABLES:
            for col in TABLES[table].columns:
                ident, gen = col.identifier, _DEFAULT_GENERALISERS.get((table, col.name))
                if ident is _I.CUSTOMER_KEY:
                    rules.append(ColumnRule(table, col.name, _A.PSEUDONYMISE))
                elif ident is _I.QUASI and gen is not None:
                    rules.append(ColumnRule(table, col.name, _A.GENERALISE, *gen))
                elif ident is _I.NONE:
                    rules.append(ColumnRule(table, col.name, _A.KEEP))
                else:
                    rules.append(ColumnRule(table, col.name, _A.DROP))
        order = _CUSTOMER_ORDER.split()

        def position(r: ColumnRule) -> tuple[int, int]:  # stable: birth_date before age_band
            at = order.index(r.output) if r.table == "customers" and r.output in order else 99
            return RELEASED_TABLES.index(r.table), at

        rules.sort(key=position)
        return cls(tuple(rules), "default")

    @classmethod
    def from_toml(cls, path: Path) -> DeidentificationPolicy:
        """Load a policy file (format in the module docstring); :class:`ConfigError` if invalid."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the de-identification policy ({exc})") from exc
        unknown = set(data) - {"name", "base", "rules"}
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; valid: name, base, rules")
        base, name = data.get("base", "none"), str(data.get("name", Path(path).stem))
        if base not in ("default", "none"):
            raise ConfigError(f"{path}: base must be 'default' or 'none', not {base!r}")
        try:
            rules = []
            for i, item in enumerate(data.get("rules", []), start=1):
                try:
                    rules.append(ColumnRule(**item))
                except TypeError as exc:
                    raise ValueError(f"rule {i}: {exc}") from exc
            own = cls(tuple(rules), name)
            return cls.default().with_rules(*own.rules, name=name) if base == "default" else own
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
