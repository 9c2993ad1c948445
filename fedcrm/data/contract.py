"""The store data contract: which tables a store directory holds and what their columns mean.

This module is the single source of truth; ``docs/data-contract.md`` explains it for people,
the validator checks it, the synthetic chain and the importer write it, and the
de-identification policy must cover every column it declares.

In memory (after :func:`fedcrm.data.store.load_store`) the kinds map to pandas dtypes:
``ID``/``TEXT`` → ``str``, ``TIMESTAMP``/``DATE`` → ``datetime64[ns]`` (naive, store-local
time), ``FLOAT`` → ``float64``, ``INT`` → ``int64``, ``BOOL`` → ``bool``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CONSENTS",
    "CUSTOMERS",
    "INTERACTIONS",
    "INTERACTION_KINDS",
    "KNOWN_CHANNELS",
    "PURPOSES",
    "TABLES",
    "TRANSACTIONS",
    "Column",
    "ColumnKind",
    "IdentifierClass",
    "TableContract",
    "ValidationLimits",
]

#: Purposes a consent event can be given for. Anything else in a ledger is an error.
PURPOSES: tuple[str, ...] = ("analytics", "model_training", "marketing")

#: Interaction kinds; a closed set so features mean the same thing at every store.
INTERACTION_KINDS: tuple[str, ...] = ("view", "cart", "share", "review", "complaint", "service")

#: Channels with a feature of their own; any other channel value counts as ``other``.
KNOWN_CHANNELS: tuple[str, ...] = (
    "pos",
    "app",
    "mini_program",
    "web",
    "live_stream",
    "partner",
)


class ColumnKind(StrEnum):
    ID = "id"
    TEXT = "text"
    TIMESTAMP = "timestamp"
    DATE = "date"
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"


class IdentifierClass(StrEnum):
    """How identifying a column is, which decides its default de-identification."""

    CUSTOMER_KEY = "customer_key"  # the store-local customer id: becomes a keyed pseudonym
    DIRECT = "direct"  # identifies a person on its own: always dropped
    QUASI = "quasi"  # identifies in combination: generalised
    RECORD_KEY = "record_key"  # a row key of no use outside the store
    NONE = "none"


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    description: str
    required: bool = True  # the column must be present in the file
    nullable: bool = False  # empty values are allowed
    identifier: IdentifierClass = IdentifierClass.NONE


@dataclass(frozen=True)
class TableContract:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    required: bool = True  # the table must exist in a store directory
    customer_column: str | None = "customer_id"

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


@dataclass(frozen=True)
class ValidationLimits:
    """Plausibility bounds. Values outside them are errors, not warnings."""

    max_line_amount: float = 1_000_000.0
    max_quantity: int = 10_000
    max_age_years: int = 120
    earliest_timestamp: str = "1990-01-01"
    clock_skew_days: int = 1  # timestamps later than now + skew are "in the future"
    max_reported_per_check: int = 20  # further findings of one check are summarised


_K = ColumnKind
_I = IdentifierClass

CUSTOMERS = TableContract(
    name="customers",
    key=("customer_id",),
    columns=(
        Column(
            "customer_id",
            _K.ID,
            "Store-local customer id (kept as text).",
            identifier=_I.CUSTOMER_KEY,
        ),
        Column("name", _K.TEXT, "Full name.", required=False, nullable=True, identifier=_I.DIRECT),
        Column(
            "mobile",
            _K.TEXT,
            "Mobile phone number.",
            required=False,
            nullable=True,
            identifier=_I.DIRECT,
        ),
        Column(
            "email", _K.TEXT, "E-mail address.", required=False, nullable=True, identifier=_I.DIRECT
        ),
        Column(
            "national_id",
            _K.TEXT,
            "National ID number (e.g. 18-digit resident ID).",
            required=False,
            nullable=True,
            identifier=_I.DIRECT,
        ),
        Column(
            "birth_date",
            _K.DATE,
            "Date of birth.",
            required=False,
            nullable=True,
            identifier=_I.QUASI,
        ),
        Column(
            "gender",
            _K.TEXT,
            "Gender as recorded (F/M/other/unknown).",
            required=False,
            nullable=True,
            identifier=_I.QUASI,
        ),
        Column(
            "address",
            _K.TEXT,
            "Street address.",
            required=False,
            nullable=True,
            identifier=_I.DIRECT,
        ),
        Column("city", _K.TEXT, "City.", required=False, nullable=True, identifier=_I.QUASI),
        Column(
            "postcode",
            _K.TEXT,
            "Postal code (kept as text).",
            required=False,
            nullable=True,
            identifier=_I.QUASI,
        ),
        Column(
            "member_tier",
            _K.TEXT,
            "Loyalty tier (e.g. regular/silver/gold/platinum).",
            required=False,
            nullable=True,
        ),
        Column(
            "joined_at",
            _K.TIMESTAMP,
            "When the customer joined the store's membership.",
            identifier=_I.QUASI,
        ),
        Column(
            "age_band",
            _K.TEXT,
            "Already generalised age band (e.g. from an import).",
            required=False,
            nullable=True,
            identifier=_I.QUASI,
        ),
        Column(
            "region",
            _K.TEXT,
            "Already generalised region (e.g. from an import).",
            required=False,
            nullable=True,
            identifier=_I.QUASI,
        ),
    ),
)

TRANSACTIONS = TableContract(
    name="transactions",
    key=("transaction_id",),
    columns=(
        Column(
            "transaction_id",
            _K.ID,
            "Unique id of the line (one row per purchased line).",
            identifier=_I.RECORD_KEY,
        ),
        Column(
            "customer_id",
            _K.ID,
            "Store-local customer id; must exist in customers.",
            identifier=_I.CUSTOMER_KEY,
        ),
        Column("timestamp", _K.TIMESTAMP, "Time of purchase (store-local time)."),
        Column("amount", _K.FLOAT, "Amount paid for the line, after discount; >= 0."),
        Column("quantity", _K.INT, "Units bought; >= 1."),
        Column(
            "category",
            _K.TEXT,
            "Product category; '/' separates hierarchy levels.",
            required=False,
            nullable=True,
        ),
        Column("product_id", _K.TEXT, "Product (SKU) id.", required=False, nullable=True),
        Column(
            "channel",
            _K.TEXT,
            "Sales channel (pos, app, mini_program, web, live_stream, partner, ...).",
            required=False,
            nullable=True,
        ),
        Column("store_id", _K.TEXT, "Store or partner that made the sale."),
        Column(
            "discount",
            _K.FLOAT,
            "Discount granted on the line, in currency; >= 0.",
            required=False,
            nullable=True,
        ),
    ),
)

INTERACTIONS = TableContract(
    name="interactions",
    required=False,
    columns=(
        Column(
            "customer_id",
            _K.ID,
            "Store-local customer id; must exist in customers.",
            identifier=_I.CUSTOMER_KEY,
        ),
        Column("timestamp", _K.TIMESTAMP, "Time of the interaction."),
        Column("kind", _K.TEXT, "One of: " + ", ".join(INTERACTION_KINDS) + "."),
        Column("category", _K.TEXT, "Category concerned, if any.", required=False, nullable=True),
        Column(
            "score",
            _K.FLOAT,
            "Rating or satisfaction score, if any.",
            required=False,
            nullable=True,
        ),
    ),
)

CONSENTS = TableContract(
    name="consents",
    key=(),  # an append-only ledger: events, not entities
    columns=(
        Column(
            "customer_id",
            _K.ID,
            "Store-local customer id; must exist in customers.",
            identifier=_I.CUSTOMER_KEY,
        ),
        Column("purpose", _K.TEXT, "One of: " + ", ".join(PURPOSES) + "."),
        Column("granted", _K.BOOL, "True for a grant, false for a refusal or revocation."),
        Column("timestamp", _K.TIMESTAMP, "When the event was recorded."),
        Column(
            "source",
            _K.TEXT,
            "Where it was recorded (pos_signup, app_privacy_center, import-declaration, ...).",
        ),
        Column("policy_version", _K.TEXT, "Version of the privacy notice the customer saw."),
    ),
)

TABLES: dict[str, TableContract] = {
    t.name: t for t in (CUSTOMERS, TRANSACTIONS, INTERACTIONS, CONSENTS)
}
