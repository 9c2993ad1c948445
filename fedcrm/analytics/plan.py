"""What the coordinator asks of every store for one analytics query (sent as config).

A :class:`QueryPlan` names the query, its ε, the label horizon (for queries over observed
churn) and the query's public context (:class:`~fedcrm.analytics.queries.QueryContext`:
formats, the chain's taxonomy, cohort months, contribution bounds) as JSON. Everything in it
is public: it fixes the answer's cells before any store reads its data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd

from fedcrm.errors import ConfigError

__all__ = ["QUERY_PREFIX", "QueryPlan", "context_from_json", "context_to_json"]

QUERY_PREFIX = "query."


def context_to_json(context: Any) -> str:
    """A :class:`QueryContext` as canonical JSON (the vocabulary as its own JSON)."""
    payload: dict[str, Any] = {}
    for f in fields(context):
        value = getattr(context, f.name)
        if f.name == "vocabulary":
            value = None if value is None else value.to_json()
        elif isinstance(value, pd.Timestamp):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        payload[f.name] = value
    return json.dumps(payload, sort_keys=True, ensure_ascii=False)


def context_from_json(text: str) -> Any:
    """The :class:`QueryContext` of :func:`context_to_json`."""
    from fedcrm.analytics.queries import QueryContext
    from fedcrm.models.vocabulary import CategoryVocabulary

    try:
        payload = json.loads(text) if text else {}
        if not isinstance(payload, dict):
            raise TypeError("not a JSON object")
        known = {f.name for f in fields(QueryContext)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise KeyError(f"unknown fields {unknown}")
        if payload.get("vocabulary") is not None:
            payload["vocabulary"] = CategoryVocabulary.from_json(payload["vocabulary"])
        if payload.get("cohort_start") is not None:
            payload["cohort_start"] = pd.Timestamp(payload["cohort_start"])
        if "formats" in payload:
            payload["formats"] = tuple(payload["formats"])
        return QueryContext(**payload)
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise ConfigError(f"the query's context is not valid ({exc})") from None


@dataclass(frozen=True)
class QueryPlan:
    """One query of an analytics run: name, per-store ε, δ (0: the store's), horizon."""

    name: str
    epsilon: float
    delta: float = 0.0
    horizon_days: int = 60
    context: str = ""  # context_to_json(QueryContext)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("query plan: the query name must be a non-empty string")
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, int | float):
            raise ConfigError(f"query plan: epsilon must be a number (got {self.epsilon!r})")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"query plan: epsilon must be > 0 (got {self.epsilon})")
        if isinstance(self.delta, bool) or not (0 <= float(self.delta) < 1):
            raise ConfigError(f"query plan: delta must be in [0, 1) (got {self.delta!r})")
        if isinstance(self.horizon_days, bool) or not isinstance(self.horizon_days, int):
            raise ConfigError("query plan: horizon-days must be an integer")
        if self.horizon_days < 1:
            raise ConfigError("query plan: horizon-days must be >= 1")
        object.__setattr__(self, "epsilon", float(self.epsilon))
        object.__setattr__(self, "delta", float(self.delta))

    def to_config(self) -> dict[str, int | float | str]:
        return {f"{QUERY_PREFIX}{f.name.replace('_', '-')}": getattr(self, f.name)
                for f in fields(self)}  # fmt: skip

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QueryPlan:
        keys = {f.name: f"{QUERY_PREFIX}{f.name.replace('_', '-')}" for f in fields(cls)}
        missing = [k for k in keys.values() if k not in config]
        if missing:
            raise ConfigError(f"the coordinator's query plan lacks {missing}")
        return cls(**{name: config[key] for name, key in keys.items()})

    @staticmethod
    def is_query(config: Mapping[str, Any]) -> bool:
        """Whether a message's config carries a query plan (else it is a training plan)."""
        return f"{QUERY_PREFIX}name" in config

    @property
    def digest(self) -> str:
        text = json.dumps(self.to_config(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def query_context(self) -> Any:
        return context_from_json(self.context)

    def query(self) -> Any:
        """The query this plan names, with its public cells."""
        from fedcrm.analytics.queries import build_query

        return build_query(self.name, self.query_context())
