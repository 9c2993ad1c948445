"""The compliance report of a run: what the logs and ledgers say, in ten sections.

:func:`build_report` reads a run directory (``RUN/audit.jsonl``, ``summary.json``,
``analytics/*.json``, ``model/*card*.json``, ``refusals.jsonl``) and, when given the chain
directory, every store's private records (``STORE/.fedcrm/audit.jsonl``,
``privacy_ledger.json``, ``erasure_register.jsonl``), verifies the audit trail
(:func:`fedcrm.audit.verify.verify_tree`) and returns one JSON document (format
:data:`REPORT_FORMAT`, version :data:`REPORT_VERSION`; described field by field in
``docs/report.schema.json``) with one section per field group of an audit report (GDPR
Art. 30 records, Art. 35 / PIPL Art. 55–56 impact assessment):

1. ``controller`` — controller, DPO, report period, federation (run) id, participating stores;
2. ``processing`` — records of processing per purpose (churn, preference, analytics);
3. ``consent`` — consent evidence per store (``consent_filter`` events);
4. ``deidentification`` — de-identification statement per store (``deidentification`` events);
5. ``dp_ledger`` — the privacy ledger per store: spends, ε per purpose and lifetime, refusals;
6. ``analytics`` — the analytics release log (coordinator ``analytics_release`` events);
7. ``secure_aggregation`` — SecAgg+ configuration and key inventory;
8. ``audit_integrity`` — per log: entries, head hash, verification result;
9. ``erasure`` — the erasure register per store;
10. ``impact_assessment`` — risks, mitigations, measured figures, residual risk.

**No personal data.** The report reads only logs, ledgers, registers and run summaries, which
hold counts, parameters, hashes and ids of runs and keys — never a store's customer tables.
From the erasure register it takes request ids, times and affected runs, not the keyed
customer ref nor the free-text reason (only whether one was given).

:func:`write_report` writes the document as JSON or as one self-contained HTML page
(:mod:`fedcrm.audit.report_html`), atomically.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcrm.audit.log import AUDIT_LOG_NAME, STORE_HEAD, AuditEntry, parse_line
from fedcrm.data.atomic import atomic_file
from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.errors import ConfigError, FedcrmError

__all__ = [
    "CLASSIFICATION",
    "FORMATS",
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "SECTIONS",
    "build_report",
    "default_report_path",
    "iter_sections",
    "write_report",
]

REPORT_FORMAT = "fedcrm-compliance-report"
REPORT_VERSION = 1
FORMATS: tuple[str, ...] = ("html", "json")
#: The honest classification of what leaves a store's boundary (PIPL Art. 73, GDPR Rec. 26).
CLASSIFICATION = "de-identified, not anonymised (PIPL Art. 73)"
#: (key in the document, heading) of the ten sections, in order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("controller", "Controller, contacts and scope"),
    ("processing", "Records of processing"),
    ("consent", "Consent evidence"),
    ("deidentification", "De-identification"),
    ("dp_ledger", "Differential-privacy ledger"),
    ("analytics", "Analytics release log"),
    ("secure_aggregation", "Secure aggregation and key inventory"),
    ("audit_integrity", "Audit-chain integrity"),
    ("erasure", "Erasure register"),
    ("impact_assessment", "Impact-assessment summary"),
)
#: The ledger purposes (tasks), in report order.
TASKS: tuple[str, ...] = ("churn", "preference", "analytics")
#: The consent purpose each task is filtered by when no consent_filter event says otherwise
#: (fedcrm.clients.store_agent.CONSENT_PURPOSE, fedcrm.clients.analytics_agent.ANALYTICS_PURPOSE).
DEFAULT_CONSENT_PURPOSE = {
    "churn": "model_training",
    "preference": "model_training",
    "analytics": "analytics",
}
_TASK_NAMES = {
    "churn": "Churn-risk model (federated logistic/MLP model, DP-SGD in each store)",
    "preference": "Category-preference model (federated ranking model, DP-SGD in each store)",
    "analytics": "Federated analytics (noisy aggregate queries with small-cell suppression)",
}
#: SecAgg+ parameters fixed in fedcrm/server/app.py and fedcrm/server/analytics.py (the
#: coordinator's config event records whether SecAgg+ is on, not these constants).
SECAGG_PROTOCOL_PARAMETERS = {
    "num_shares": "1.0: every participating store holds a share of every other store's mask",
    "reconstruction_threshold": "0.67: two thirds of the shares reconstruct a dropped store's "
    "mask, so up to a third of a round's stores may drop out after sharing",
    "quantization": "updates are clipped to ±clipping range and quantised to 2^22 levels "
    "before masking (training); analytics answers use their own fixed range",
}
_MAX_CONTACT = 200
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# -- small helpers ---------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _num(value: Any) -> float | None:
    """A finite float, or None (for absent, non-numeric, NaN or infinite values)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _read_json(path: Path, notes: list[str], what: str) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{what} could not be read ({type(exc).__name__}); left out")
        return None


def _read_jsonl(path: Path, notes: list[str], what: str) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    bad = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        notes.append(f"{what} could not be read ({type(exc).__name__}); left out")
        return []
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        notes.append(f"{what}: {bad} line(s) are not JSON objects and were skipped")
    return rows


def _read_log(path: Path, notes: list[str], what: str) -> list[AuditEntry]:
    """The parseable entries of a log, in file order (verification is done separately)."""
    if not path.is_file():
        return []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        notes.append(f"{what} could not be read ({exc.strerror}); left out")
        return []
    entries, bad = [], 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            entries.append(parse_line(line))
        except ValueError:
            bad += 1
    if bad:
        notes.append(f"{what}: {bad} line(s) are not audit entries and were not read")
    return entries


def _check_contact(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    if not text:
        return None
    if len(text) > _MAX_CONTACT or _NOT_TEXT.search(text):
        raise ConfigError(f"the {what} must be one line of at most {_MAX_CONTACT} characters")
    return text


class _Paths:
    """Turns paths under the run and chain directories into ``RUN/…`` and ``STORES/…``, so the
    report is portable and names no local directory layout."""

    def __init__(self, run_dir: Path, stores_dir: Path | None) -> None:
        roots: set[tuple[str, str]] = set()
        for given, name in ((run_dir, "RUN"), (stores_dir, "STORES")):
            if given is None:
                continue
            for form in (given, given.absolute(), given.resolve()):
                text = str(form).rstrip("/")
                if text and text != ".":
                    roots.add((text, name))
        # longest first, so a run directory inside the chain directory keeps its RUN prefix
        self._roots = sorted(roots, key=lambda item: len(item[0]), reverse=True)

    def label(self, path: Path | str) -> str:
        text = str(path)
        for prefix, name in self._roots:
            if text == prefix:
                return name
            if text.startswith(prefix + "/"):
                return name + text[len(prefix) :]
        return text

    def text(self, message: str) -> str:
        for prefix, name in self._roots:
            message = re.sub(rf"(?<![\w./-]){re.escape(prefix)}/", name + "/", message)
        return message


# -- the sources -----------------------------------------------------------------------------
class _Store:
    """One store's private records, as read for the report."""

    def __init__(self, layout: StoreLayout, notes: list[str]) -> None:
        self.layout = layout
        self.label = layout.store_id
        self.log_path = layout.private_dir / AUDIT_LOG_NAME
        self.entries = _read_log(self.log_path, notes, f"store {self.label}'s audit log")
        self.writer = self.entries[0].writer if self.entries else None

    def events(self, kind: str) -> list[AuditEntry]:
        return [e for e in self.entries if e.kind == kind]


class _Sources:
    def __init__(self, run_dir: Path, stores_dir: Path | None) -> None:
        self.notes: list[str] = []
        self.run_dir = run_dir
        self.stores_dir = stores_dir
        self.coordinator = _read_log(
            run_dir / AUDIT_LOG_NAME, self.notes, "the coordinator's audit log"
        )
        self.summary = _read_json(run_dir / "summary.json", self.notes, "summary.json") or {}
        if not isinstance(self.summary, dict):
            self.summary = {}
        self.refusals = _read_jsonl(run_dir / "refusals.jsonl", self.notes, "refusals.jsonl")
        self.releases: dict[str, dict[str, Any]] = {}
        # a training run writes its queries to RUN/analytics/, an analytics run to RUN/
        candidates = [
            *sorted((run_dir / "analytics").glob("*.json")),
            *sorted(run_dir.glob("*.json")),
        ]
        for path in candidates:
            if path.name in ("summary.json", "report.json"):
                continue
            doc = _read_json(path, self.notes, str(path.relative_to(run_dir)))
            if isinstance(doc, dict) and doc.get("format") == "fedcrm-analytics-release":
                self.releases[str(doc.get("query") or path.stem)] = doc
        self.cards: dict[str, dict[str, Any]] = {}
        for path in sorted((run_dir / "model").glob("*card*.json")):
            card = _read_json(path, self.notes, f"model/{path.name}")
            if isinstance(card, dict):
                self.cards[path.name] = card
        self.stores: list[_Store] = []
        if stores_dir is not None:
            for store_dir in discover_stores(stores_dir):
                layout = StoreLayout(store_dir)
                if layout.private_dir.is_dir():
                    self.stores.append(_Store(layout, self.notes))

    def coordinator_events(self, kind: str) -> list[AuditEntry]:
        return [e for e in self.coordinator if e.kind == kind]

    def first(self, kind: str) -> AuditEntry | None:
        found = self.coordinator_events(kind)
        return found[0] if found else None

    @property
    def config(self) -> dict[str, Any]:
        entry = self.first("config")
        return dict(entry.payload) if entry is not None else {}

    @property
    def run_id(self) -> str | None:
        for entry in self.coordinator:
            if "run_id" in entry.payload:
                return str(entry.payload["run_id"])
        value = self.summary.get("run_id")
        return None if value is None else str(value)


# -- section 1 -------------------------------------------------------------------------------
def _participants(src: _Sources) -> dict[str, set[str]]:
    """Store label -> what it took part in, as the coordinator's records say."""
    tasks: dict[str, set[str]] = defaultdict(set)
    for entry in src.coordinator_events("model_version"):
        for label in entry.payload.get("epsilon_by_store") or {}:
            tasks[str(label)].add(str(entry.payload.get("task")))
    for doc in src.releases.values():
        if doc.get("status") == "released":
            for label in doc.get("stores") or {}:
                tasks[str(label)].add("analytics")
    for entry in src.coordinator_events(STORE_HEAD):
        tasks.setdefault(str(entry.payload.get("store")), set())  # a pinned store took part
    return tasks


def _controller(
    src: _Sources, controller: str | None, dpo: str | None, paths: _Paths
) -> dict[str, Any]:
    times = [e.time for e in src.coordinator] + [e.time for s in src.stores for e in s.entries]
    start, end = src.first("run_start"), None
    ends = src.coordinator_events("run_end")
    if ends:
        end = ends[-1]
    participants = _participants(src)
    by_label = {s.label: s for s in src.stores}
    heads: dict[str, str] = {}
    for entry in src.coordinator_events(STORE_HEAD):
        heads[str(entry.payload.get("store"))] = str(entry.payload.get("key_id") or "")
    labels = sorted(set(participants) | set(by_label))
    stores = []
    for label in labels:
        store = by_label.get(label)
        stores.append(
            {
                "label": label,
                "writer": store.writer if store is not None else None,
                "participated": label in participants,
                "tasks": sorted(participants.get(label, set())),
                "audit_key_id": (store.entries[0].key_id if store and store.entries else None)
                or heads.get(label)
                or None,
                "log_available": store is not None and bool(store.entries),
            }
        )
    return {
        "regulation": "GDPR Art. 30(1)(a), Art. 37–39; PIPL Art. 52, 54",
        "controller": controller,
        "dpo": dpo,
        "report_period": {
            "first_event": min(times) if times else None,
            "last_event": max(times) if times else None,
        },
        "federation_id": src.run_id,
        "run": {
            "run_id": src.run_id,
            "mode": _str((start.payload if start else {}).get("mode")),
            "started": start.time if start else None,
            "ended": end.time if end else None,
            "status": _str(end.payload.get("status")) if end else None,
            "config_digest": _str(src.config.get("config_digest")),
        },
        "stores": stores,
        "sources": {
            "run_dir": paths.label(src.run_dir),
            "stores_dir": None if src.stores_dir is None else paths.label(src.stores_dir),
            "store_logs_read": len([s for s in src.stores if s.entries]),
        },
    }


# -- section 2 -------------------------------------------------------------------------------
def _this_run(src: _Sources, payload: Mapping[str, Any]) -> bool:
    return src.run_id is not None and str(payload.get("run_id")) == src.run_id


def _deid_statements(src: _Sources, task: str) -> list[dict[str, Any]]:
    return [
        e.payload
        for s in src.stores
        for e in s.events("deidentification")
        if _this_run(src, e.payload) and e.payload.get("task") == task
    ]


def _data_categories(statements: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    fields: dict[str, dict[str, str]] = defaultdict(dict)
    for statement in statements:
        for col in statement.get("columns") or []:
            action, table = str(col.get("action")), str(col.get("table"))
            if action == "drop" or col.get("output") is None:
                continue
            output, column = str(col.get("output")), str(col.get("column"))
            if action == "generalise":
                how = "generalised"
                if column != output:
                    how += f" from {column}"
                generaliser = col.get("generaliser")
                if generaliser and generaliser not in (column, output):
                    how += f" to {generaliser}"
            elif action == "pseudonymise":
                how = "keyed pseudonym"
            else:
                how = "as recorded"
            fields[table][output] = how
    return [
        {"table": table, "fields": [f"{name} ({how})" for name, how in cols.items()]}
        for table, cols in fields.items()
    ]


def _processing(src: _Sources) -> dict[str, Any]:
    config = src.config
    secagg = bool(config.get("secure_aggregation"))
    versions = src.coordinator_events("model_version")
    records = []
    for task in TASKS:
        consent_purposes = sorted(
            {
                str(e.payload.get("purpose"))
                for s in src.stores
                for e in s.events("consent_filter")
                if _this_run(src, e.payload) and e.payload.get("task") == task
            }
        )
        statements = _deid_statements(src, task)
        if task == "preference" and not statements:
            # the preference model is trained on the churn task's preparation of the run
            statements = _deid_statements(src, "churn")
            consent_purposes = consent_purposes or sorted(
                {
                    str(e.payload.get("purpose"))
                    for s in src.stores
                    for e in s.events("consent_filter")
                    if _this_run(src, e.payload) and e.payload.get("task") == "churn"
                }
            )
        purposes = consent_purposes or [DEFAULT_CONSENT_PURPOSE[task]]
        model_versions = [
            {
                "run_id": _str(e.payload.get("run_id")),
                "files_sha256": {str(k): str(v) for k, v in (e.payload.get("files") or {}).items()},
                "rounds": _int(e.payload.get("rounds")),
                "epsilon_target": _num(e.payload.get("epsilon_target")),
                "recorded_at": e.time,
            }
            for e in versions
            if e.payload.get("task") == task
        ]
        released = [e for e in src.coordinator_events("analytics_release")]
        performed = bool(model_versions) if task != "analytics" else bool(released)
        channel = "SecAgg+ secure aggregation" if secagg else "plain aggregation (no SecAgg+)"
        if task == "analytics":
            recipients = (
                "The coordinator receives only noised aggregates: each store adds discrete "
                f"Gaussian noise to its counts and the totals are summed under {channel}; "
                "cells below the suppression threshold are withheld. The released tables "
                "(RUN/analytics/) go to the analysts of the controller."
            )
            epsilon = _num(config.get("analytics_epsilon"))
            measures_dp = f"per-store DP (ε = {epsilon:g} per query)" if epsilon else "per-store DP"
        else:
            recipients = (
                "The coordinator receives only DP-noised model updates (DP-SGD with per-customer "
                f"clipping in each store) under {channel}; the trained model (RUN/model/) is "
                "shared with the participating stores for local scoring."
            )
            epsilon = _num(config.get("epsilon"))
            measures_dp = f"DP-SGD in each store (target ε = {epsilon:g} per run)" if epsilon else (
                "DP-SGD in each store"
            )  # fmt: skip
        records.append(
            {
                "purpose": task,
                "name": _TASK_NAMES[task],
                "performed_in_run": performed,
                "consent_purposes": purposes,
                "lawful_basis": (
                    f"consent to the {' / '.join(repr(p) for p in purposes)} purpose, as recorded "
                    "in each store's consent ledger and applied at the store boundary (GDPR "
                    "Art. 6(1)(a), Art. 7; PIPL Art. 13(1), Art. 14)"
                ),
                "data_categories": _data_categories(statements),
                "subject_categories": [
                    "retail customers (CRM / loyalty members) of the participating stores whose "
                    f"latest {' / '.join(purposes)} consent event is a grant",
                ],
                "recipients": recipients,
                "retention": (
                    "Customer records stay in each store and are never transferred. Model files "
                    "and released aggregates are kept in the run directory until the controller "
                    "deletes them; audit logs, privacy ledgers and erasure registers are kept for "
                    "the store's lifetime (at least 3 years, PIPL Art. 56)."
                ),
                "security_measures": [
                    "consent filter and erasure exclusion at the store boundary",
                    "de-identification: identifiers dropped, customer ids replaced by keyed "
                    "pseudonyms, quasi-identifiers generalised",
                    measures_dp,
                    "per-store lifetime privacy ledger with per-purpose budget caps",
                    channel,
                    "egress guard: only numbers of an allow-list leave a store",
                    "signed, hash-chained audit logs at every party",
                ],
                "model_versions": model_versions,
            }
        )
    return {
        "regulation": "GDPR Art. 6, 30; PIPL Art. 13, 14, 17, 51",
        "records": records,
    }


# -- section 3 -------------------------------------------------------------------------------
def _consent(src: _Sources) -> dict[str, Any]:
    stores = []
    for store in src.stores:
        groups: dict[tuple[str, str, str], list[AuditEntry]] = defaultdict(list)
        for entry in store.events("consent_filter"):
            p = entry.payload
            key = (str(p.get("run_id")), str(p.get("task")), str(p.get("purpose")))
            groups[key].append(entry)
        filters = []
        versions: set[str] = set()
        for (run_id, task, purpose), entries in groups.items():
            last = entries[-1].payload
            excluded = {
                str(k): int(v)
                for k, v in (last.get("excluded") or {}).items()
                if _int(v) is not None
            }
            by_version = {
                str(k): int(v)
                for k, v in (last.get("included_by_policy_version") or {}).items()
                if _int(v) is not None
            }
            versions.update(by_version)
            counts = {
                json.dumps([e.payload.get("included"), e.payload.get("excluded")], sort_keys=True)
                for e in entries
            }
            filters.append(
                {
                    "run_id": run_id,
                    "this_run": run_id == src.run_id,
                    "task": task,
                    "purpose": purpose,
                    "as_of": _str(last.get("as_of")),
                    "recorded_at": entries[-1].time,
                    "applications": len(entries),
                    "consistent": len(counts) == 1,
                    "total_customers": _int(last.get("total_customers")),
                    "included": _int(last.get("included")),
                    "excluded": excluded,
                    "excluded_total": sum(excluded.values()),
                    "withdrawn": excluded.get("revoked", 0),
                    "erased_excluded": _int(last.get("erased_excluded")),
                    "included_by_policy_version": by_version,
                    "events_considered": _int(last.get("events_considered")),
                    "events_after_as_of": _int(last.get("events_after_as_of")),
                }
            )
        purposes = {f["purpose"] for f in filters}
        stores.append(
            {
                "store": store.label,
                "consent_versions": sorted(versions),
                "filters": filters,
                "marketing": (
                    "marketing consent was applied by a recorded run"
                    if "marketing" in purposes
                    else "no recorded run processed data for the 'marketing' purpose; "
                    "marketing and profiling opt-outs are kept in the store's consent ledger"
                ),
            }
        )
    return {
        "regulation": "GDPR Art. 7, 21; PIPL Art. 14, 15, 24",
        "withdrawal_to_exclusion": (
            "A withdrawal takes effect at the next preparation of the store's data: the consent "
            "filter applies each customer's latest consent event at or before the preparation "
            "time (as_of); a customer who withdrew is excluded from that run on, and later "
            "events are counted as events_after_as_of and ignored until the next run."
        ),
        "stores": stores,
    }


# -- section 4 -------------------------------------------------------------------------------
def _deidentification(src: _Sources) -> dict[str, Any]:
    stores = []
    for store in src.stores:
        latest: dict[tuple[str, str], AuditEntry] = {}
        for entry in store.events("deidentification"):
            latest[(str(entry.payload.get("run_id")), str(entry.payload.get("task")))] = entry
        statements = []
        for (run_id, task), entry in latest.items():
            p = entry.payload
            columns = [
                {
                    "table": str(c.get("table")),
                    "column": str(c.get("column")),
                    "action": str(c.get("action")),
                    "generaliser": _str(c.get("generaliser")),
                    "output": _str(c.get("output")),
                }
                for c in p.get("columns") or []
                if isinstance(c, Mapping)
            ]
            actions: dict[str, int] = defaultdict(int)
            for c in columns:
                actions[str(c["action"])] += 1
            statements.append(
                {
                    "run_id": run_id,
                    "this_run": run_id == src.run_id,
                    "task": task,
                    "recorded_at": entry.time,
                    "policy": _str(p.get("policy")),
                    "policy_digest": _str(p.get("policy_digest")),
                    "pseudonym_key_id": _str(p.get("pseudonym_key_id")),
                    "classification_logged": _str(p.get("classification")),
                    "action_counts": dict(sorted(actions.items())),
                    "output_rows": {
                        str(k): int(v)
                        for k, v in (p.get("output_rows") or {}).items()
                        if _int(v) is not None
                    },
                    "columns": columns,
                }
            )
        key_ids = sorted({str(s["pseudonym_key_id"]) for s in statements if s["pseudonym_key_id"]})
        stores.append(
            {
                "store": store.label,
                "policies": sorted({f"{s['policy']} ({s['policy_digest']})" for s in statements}),
                "pseudonym_key_ids": key_ids,
                "statements": statements,
            }
        )
    return {
        "regulation": "GDPR Art. 4(5), 25, 32; PIPL Art. 51, 73",
        "classification": CLASSIFICATION,
        "explanation": (
            "Direct identifiers are dropped and customer ids are replaced by keyed pseudonyms "
            "(HMAC-SHA256 under the store's own key); quasi-identifiers are generalised. Whoever "
            "holds a store's key can re-link pseudonyms to customers, so the prepared data is "
            "de-identified personal information, not anonymised data."
        ),
        "key_custody": (
            "Each store's pseudonym key is created and kept in STORE/.fedcrm/keys/ (mode 0600) "
            "and never leaves the store; the coordinator never receives it. The report names "
            "keys by id only."
        ),
        "stores": stores,
    }


# -- section 5 -------------------------------------------------------------------------------
def _caps(src: _Sources, label: str) -> tuple[float | None, dict[str, float | None], str]:
    """(lifetime ε budget, cap per purpose, where they come from) of one store."""
    summaries = [src.summary, src.summary.get("preference") or {}]
    for summary in summaries:
        privacy = (summary.get("privacy") or {}).get("stores") or {}
        numbers = privacy.get(label) if isinstance(privacy, Mapping) else None
        if isinstance(numbers, Mapping) and _num(numbers.get("lifetime_budget")) is not None:
            split = numbers.get("lifetime_split") or {}
            return (
                _num(numbers["lifetime_budget"]),
                {p: _num(split.get(p)) for p in TASKS},
                "summary.json (the store's privacy report of this run)",
            )
    for row in src.summary.get("stores") or []:
        if isinstance(row, Mapping) and row.get("store") == label:
            budget = _num(row.get("lifetime_epsilon_budget"))
            if budget is not None:
                return (
                    budget,
                    {p: _num(row.get(f"cap_{p}")) for p in TASKS},
                    "summary.json (the store's privacy report of this run)",
                )
    config = src.config
    budget = _num(config.get("lifetime_epsilon"))
    shares = config.get("budget_shares") or {}
    if budget is not None:
        caps = {p: (None if _num(shares.get(p)) is None else budget * shares[p]) for p in TASKS}
        return (
            budget,
            caps,
            "coordinator config event (the run's defaults; a store's own policy may differ)",
        )
    return None, dict.fromkeys(TASKS), "not recorded"


def _ledger_numbers(store: _Store, notes: list[str]) -> dict[str, Any] | None:
    from fedcrm.privacy.ledger import PrivacyBudget, PrivacyLedger

    try:
        delta = PrivacyLedger.recorded_delta(store.layout)
        if delta is None:
            return None
        # spent() depends on δ only; the budget ε here is a placeholder (caps come from _caps)
        ledger = PrivacyLedger.open(store.layout, PrivacyBudget(1.0, delta))
        return {
            "ledger": ledger,
            "delta": delta,
            "spent": {p: float(ledger.spent(p)) for p in TASKS},
            "lifetime": float(ledger.spent()),
        }
    except FedcrmError as exc:
        notes.append(f"store {store.label}'s privacy ledger could not be read: {exc}")
        return None


def _dp_ledger(src: _Sources) -> dict[str, Any]:
    from fedcrm.privacy.accounting import ACCOUNTANT

    stores = []
    for store in src.stores:
        budget, caps, source = _caps(src, store.label)
        numbers = _ledger_numbers(store, src.notes)
        spent = numbers["spent"] if numbers else dict.fromkeys(TASKS, 0.0)
        lifetime = numbers["lifetime"] if numbers else 0.0
        ledger = numbers["ledger"] if numbers else None
        entries = list(ledger.entries) if ledger is not None else []

        def _row(spent_eps: float, cap: float | None, count: int) -> dict[str, Any]:
            remaining = None if cap is None else max(0.0, cap - spent_eps)
            return {"spent": spent_eps, "cap": cap, "remaining": remaining, "entries": count}

        purposes = {
            p: _row(spent[p], caps.get(p), sum(e.purpose == p for e in entries)) for p in TASKS
        }
        refusals = []
        for r in ledger.refusals if ledger is not None else ():
            requested, remaining = _num(r.get("requested")), _num(r.get("remaining"))
            refusals.append(
                {
                    "source": "privacy ledger",
                    "run_id": _str(r.get("run_id")),
                    "purpose": _str(r.get("purpose")),
                    "round": _int(r.get("round")),
                    "scope": _str(r.get("scope")),
                    "requested": requested,
                    "remaining": remaining,
                    "difference": (
                        None if requested is None or remaining is None else requested - remaining
                    ),
                    "limit": _num(r.get("limit")),
                    "time": _str(r.get("refused_at")),
                }
            )
        for entry in store.events("refusal"):
            p = entry.payload
            refusals.append(
                {
                    "source": "store audit log",
                    "run_id": _str(p.get("run_id")),
                    "purpose": _str(p.get("task")),
                    "round": _int(p.get("round")),
                    "scope": _str(p.get("scope")),
                    "requested": _num(p.get("requested_epsilon")),
                    "remaining": _num(p.get("remaining_epsilon")),
                    "difference": _num(p.get("difference_epsilon")),
                    "limit": None,
                    "time": entry.time,
                }
            )
        rounds = []
        for entry in store.entries:
            p = entry.payload
            if entry.kind == "dp_round":
                rounds.append(
                    {
                        "run_id": _str(p.get("run_id")),
                        "purpose": _str(p.get("task")),
                        "round": _int(p.get("round")),
                        "query": None,
                        "noise_multiplier": _num(p.get("noise_multiplier")),
                        "sample_rate": _num(p.get("sample_rate")),
                        "steps": _int(p.get("steps")),
                        "clip_norm": _num(p.get("clip_norm")),
                        "delta": _num(p.get("delta")),
                        "purpose_epsilon_spent": _num(p.get("purpose_epsilon_spent")),
                        "lifetime_epsilon_spent": _num(p.get("lifetime_epsilon_spent")),
                        "time": entry.time,
                    }
                )
            elif entry.kind == "analytics_release":
                rounds.append(
                    {
                        "run_id": _str(p.get("run_id")),
                        "purpose": "analytics",
                        "round": None,
                        "query": _str(p.get("query")),
                        "noise_multiplier": _num(p.get("noise_multiplier")),
                        "sample_rate": 1.0,
                        "steps": 1,
                        "clip_norm": _num(p.get("l2_sensitivity")),
                        "delta": _num(p.get("delta")),
                        "purpose_epsilon_spent": _num(p.get("analytics_epsilon_spent")),
                        "lifetime_epsilon_spent": _num(p.get("lifetime_epsilon_spent")),
                        "time": entry.time,
                    }
                )
        stores.append(
            {
                "store": store.label,
                "ledger_found": ledger is not None,
                "accountant": ACCOUNTANT,
                "mechanism": (
                    "Poisson-subsampled Gaussian (DP-SGD; analytics: Gaussian release, q = 1)"
                ),
                "privacy_unit": "one customer's record in this store",
                "delta": numbers["delta"] if numbers else None,
                "budget_source": source,
                "purposes": purposes,
                "lifetime": _row(lifetime, budget, len(entries)),
                "runs": sorted({e.run_id for e in entries}),
                "entries": [
                    {
                        "run_id": e.run_id,
                        "round": e.round,
                        "purpose": e.purpose,
                        "noise_multiplier": e.noise_multiplier,
                        "sample_rate": e.sample_rate,
                        "steps": e.steps,
                        "recorded_at": e.recorded_at,
                    }
                    for e in entries
                ],
                "rounds": rounds,
                "refusals": refusals,
            }
        )
    node_labels = {
        str(row.get("node_id")): str(row.get("store"))
        for row in src.summary.get("stores") or []
        if isinstance(row, Mapping)
    }
    coordinator_refusals = [
        {
            "round": _int(r.get("round")),
            "store": node_labels.get(str(r.get("node_id"))),
            "reason": _str(r.get("reason")),
            "requested": _num(r.get("requested_epsilon")),
            "remaining": _num(r.get("remaining_epsilon")),
            "difference": _num(r.get("difference_epsilon")),
        }
        for r in src.refusals
    ]
    return {
        "regulation": "GDPR Art. 25, 32; PIPL Art. 51",
        "accountant": ACCOUNTANT,
        "stores": stores,
        "coordinator_refusals": coordinator_refusals,
    }


# -- section 6 -------------------------------------------------------------------------------
def _analytics(src: _Sources) -> dict[str, Any]:
    from fedcrm.audit.log import digest

    releases = []
    seen: set[str] = set()
    for entry in src.coordinator_events("analytics_release"):
        p = entry.payload
        query = str(p.get("query"))
        seen.add(query)
        doc = src.releases.get(query) or {}
        matches = None
        if doc.get("cells") is not None and p.get("release_sha256"):
            try:
                matches = digest(doc["cells"]) == p["release_sha256"]
            except FedcrmError:
                matches = False
        by_store = {
            str(k): _num(v.get("epsilon"))
            for k, v in (doc.get("stores") or {}).items()
            if isinstance(v, Mapping)
        }
        releases.append(
            {
                "query": query,
                "title": _str(doc.get("title")),
                "status": "released",
                "time": entry.time,
                "epsilon_per_store": _num(p.get("epsilon_per_store")),
                "epsilon_by_store": by_store,
                "k": _int(p.get("k")),
                "threshold": _num(p.get("threshold")),
                "noise_std": _num(p.get("noise_std")),
                "cells": _int(p.get("cells")),
                "suppressed": _int(p.get("suppressed")),
                "stores": _int(p.get("stores")),
                "secure_aggregation": bool(p.get("secure_aggregation")),
                "mechanism": _str(doc.get("mechanism")),
                "release_sha256": _str(p.get("release_sha256")),
                "file_matches_log": matches,
                "reason": None,
            }
        )
    for entry in src.coordinator_events("refusal"):
        p = entry.payload
        if p.get("query") is None:
            continue
        query = str(p["query"])
        seen.add(query)
        doc = src.releases.get(query) or {}
        releases.append(
            {
                "query": query,
                "title": _str(doc.get("title")),
                "status": "voided" if p.get("voided") else "refused",
                "time": entry.time,
                "epsilon_per_store": _num(p.get("epsilon")) or _num(doc.get("epsilon_per_store")),
                "epsilon_by_store": {},
                "k": None,
                "threshold": None,
                "noise_std": None,
                "cells": 0,
                "suppressed": 0,
                "stores": _int(p.get("stores_declined")),
                "secure_aggregation": bool(src.config.get("secure_aggregation")),
                "mechanism": None,
                "release_sha256": None,
                "file_matches_log": None,
                "reason": _str(doc.get("reason")) or "refused (see the coordinator's audit log)",
            }
        )
    unlogged = sorted(set(src.releases) - seen)
    if unlogged:
        src.notes.append(
            "analytics files without a matching coordinator log entry (not reported as "
            f"releases): {', '.join(unlogged)}"
        )
    releases.sort(key=lambda r: str(r["time"]))
    return {
        "regulation": "GDPR Art. 25, 89; PIPL Art. 51, 73",
        "releases": releases,
        "unlogged_files": unlogged,
    }


# -- section 7 -------------------------------------------------------------------------------
def _secure_aggregation(
    src: _Sources, verification: Any, paths: _Paths, deid: Mapping[str, Any]
) -> dict[str, Any]:
    config = src.config
    enabled = config.get("secure_aggregation")
    recorded = {
        str(k): v
        for k, v in config.items()
        if str(k).startswith(("secagg", "secure_aggregation", "min_stores"))
    }
    dropouts = []
    for task, summary in (("churn", src.summary), ("preference", src.summary.get("preference"))):
        if not isinstance(summary, Mapping):
            continue
        for row in summary.get("history") or []:
            if isinstance(row, Mapping):
                dropouts.append(
                    {
                        "task": task,
                        "round": _int(row.get("round")),
                        "stores": _int((row.get("fit") or {}).get("stores")),
                        "failures": _int(row.get("fit_failures")) or 0,
                    }
                )
    keys = []
    for log in verification.logs:
        writer = log.get("writer")
        if writer is None:
            continue
        where = paths.label(Path(log["path"]).parent / "audit.pub")
        coordinator = writer == "coordinator"
        keys.append(
            {
                "holder": writer,
                "purpose": "audit-log signing",
                "algorithm": "Ed25519",
                "key_id": _str(log.get("key_id")),
                "public_key": where,
                "custody": (
                    "private key in the operator's key directory, outside the run directory"
                    if coordinator
                    else "private key in STORE/.fedcrm/keys/, never leaves the store"
                ),
            }
        )
    for store in deid["stores"]:
        for key_id in store["pseudonym_key_ids"]:
            keys.append(
                {
                    "holder": f"store-{store['store']}",
                    "purpose": "keyed pseudonyms (de-identification) and erasure refs",
                    "algorithm": "HMAC-SHA256",
                    "key_id": key_id,
                    "public_key": None,
                    "custody": "secret key in STORE/.fedcrm/keys/, never leaves the store",
                }
            )
    tls = config.get("tls")
    return {
        "regulation": "GDPR Art. 32; PIPL Art. 51",
        "enabled": None if enabled is None else bool(enabled),
        "protocol": (
            "SecAgg+ (Flower SecAggPlusWorkflow)"
            if enabled
            else (
                "none: the coordinator sees each store's DP-noised update"
                if enabled is False
                else "not recorded"
            )
        ),
        "recorded_parameters": recorded,
        "protocol_parameters": SECAGG_PROTOCOL_PARAMETERS if enabled else {},
        "dropouts": dropouts,
        "key_inventory": keys,
        "tls": (
            str(tls)
            if tls is not None
            else "not used in simulation runs (none recorded in the "
            "run's logs); a deployment lists the SuperLink's certificate here"
        ),
        "node_keys": (
            "not used in simulation runs (none recorded in the run's logs); a deployment lists "
            "the SuperNodes' authentication keys here"
        ),
    }


# -- section 8 -------------------------------------------------------------------------------
def _audit_integrity(src: _Sources, verification: Any, paths: _Paths) -> dict[str, Any]:
    pinned: dict[str, int] = {}
    for entry in src.coordinator_events(STORE_HEAD):
        writer, seq = str(entry.payload.get("writer")), _int(entry.payload.get("seq"))
        if seq is not None:
            pinned[writer] = max(seq, pinned.get(writer, -1))
    logs = []
    for log in verification.logs:
        first = verification.first_finding(Path(log["path"]))
        writer = log.get("writer")
        pin = pinned.get(str(writer))
        logs.append(
            {
                "log": paths.label(log["path"]),
                "writer": writer,
                "key_id": _str(log.get("key_id")),
                "entries": int(log["entries"]),
                "verified": int(log["verified"]),
                "head_seq": int(log["head_seq"]),
                "head_hash": _str(log.get("head_hash")),
                "pinned_seq": pin,
                "unpinned_entries": (
                    None
                    if pin is None or writer == "coordinator"
                    else max(0, int(log["head_seq"]) - pin)
                ),
                "ok": bool(log["ok"]),
                "first_problem": None if first is None else paths.text(first.describe()),
            }
        )
    return {
        "regulation": "GDPR Art. 5(2), 30; PIPL Art. 54",
        "ok": bool(verification.ok),
        "verified_at": _now(),
        "logs": logs,
        "findings": [paths.text(f.describe()) for f in verification.findings],
        "store_heads_recorded": len(src.coordinator_events(STORE_HEAD)),
        "limits": (
            "Verification proves that each log was written in this order and with this content "
            "by the holder of its key, with nothing removed or inserted, and that each store's "
            "log still holds every head the coordinator recorded. It does not prove that a "
            "writer told the truth, and nothing pins the coordinator's own log: keep its head "
            "hash (shown with this section) with this report."
        ),
    }


# -- section 9 -------------------------------------------------------------------------------
def _erasure(src: _Sources) -> dict[str, Any]:
    from fedcrm.privacy.erasure import list_requests

    stores = []
    for store in src.stores:
        logged = {str(e.payload.get("request_id")): e for e in store.events("erasure_request")}
        problem = None
        try:
            requests = list_requests(store.layout)
        except FedcrmError as exc:
            requests, problem = [], str(exc)
            src.notes.append(f"store {store.label}'s erasure register could not be read")
        rows = []
        for r in requests:
            event = logged.get(r.request_id)
            action = (
                _str(event.payload.get("action")) if event is not None else None
            ) or "excluded at the store boundary from every later run, query and score"
            rows.append(
                {
                    "request_id": r.request_id,
                    "requested_at": r.requested_at,
                    "repeat": bool(r.repeat),
                    "reason_given": bool(r.reason),
                    "affected_model_versions": [
                        {
                            "run_id": _str(a.get("run_id")),
                            "task": _str(a.get("task")),
                            "recorded_at": _str(a.get("recorded_at")),
                            "this_run": src.run_id is not None
                            and str(a.get("run_id")) == src.run_id,
                        }
                        for a in r.affected_runs
                    ],
                    "action": action,
                    "audit_logged": event is not None,
                }
            )
        stores.append(
            {
                "store": store.label,
                "requests": rows,
                "problem": problem if problem is None else "the register could not be read",
            }
        )
    return {
        "regulation": "GDPR Art. 17, 19; PIPL Art. 47",
        "models_note": (
            "Models already trained are not changed by an erasure: retrain without the "
            "customer (fedcrm train) and withdraw the affected model versions."
        ),
        "stores": stores,
    }


# -- section 10 ------------------------------------------------------------------------------
def _rating(value: float | None, low: float, moderate: float) -> str:
    if value is None:
        return "not assessed"
    return "low" if value <= low else ("moderate" if value <= moderate else "elevated")


def _impact(document: Mapping[str, Any], src: _Sources) -> dict[str, Any]:
    ledger = document["dp_ledger"]["stores"]
    lifetime = {s["store"]: s["lifetime"]["spent"] for s in ledger if s["ledger_found"]}
    per_purpose = {
        p: max((s["purposes"][p]["spent"] for s in ledger if s["ledger_found"]), default=None)
        for p in TASKS
    }
    max_eps = max(lifetime.values(), default=None)
    deltas = [s["delta"] for s in ledger if s["delta"] is not None]
    releases = [r for r in document["analytics"]["releases"] if r["status"] == "released"]
    noise = [r["noise_std"] for r in releases if r["noise_std"] is not None]
    ks = [r["k"] for r in releases if r["k"] is not None]
    suppressed = sum(r["suppressed"] or 0 for r in releases)
    sigmas = [
        e["noise_multiplier"] for s in ledger for e in s["entries"] if e["purpose"] != "analytics"
    ]
    rates = []
    for store in document["consent"]["stores"]:
        for f in store["filters"]:
            if f["this_run"] and f["total_customers"]:
                rates.append((f["included"] or 0) / f["total_customers"])
    refusals = sum(len(s["refusals"]) for s in ledger)
    secagg = document["secure_aggregation"]["enabled"]
    verified = document["audit_integrity"]["ok"]
    erasures = sum(len(s["requests"]) for s in document["erasure"]["stores"])
    measured = {
        "max_lifetime_epsilon": max_eps,
        "lifetime_epsilon_by_store": lifetime,
        "max_epsilon_by_purpose": per_purpose,
        "delta": max(deltas) if deltas else None,
        "min_noise_multiplier": min(sigmas) if sigmas else None,
        "largest_analytics_noise_std": max(noise) if noise else None,
        "smallest_analytics_noise_std": min(noise) if noise else None,
        "smallest_k": min(ks) if ks else None,
        "suppressed_cells": suppressed,
        "released_queries": len(releases),
        "refusals": refusals + len(document["dp_ledger"]["coordinator_refusals"]),
        "min_consent_inclusion_rate": min(rates) if rates else None,
        "secure_aggregation": secagg,
        "erasure_requests": erasures,
        "audit_verified": verified,
        "empirical_attack_audit": None,
    }
    eps_text = "not measured" if max_eps is None else f"ε ≤ {max_eps:.2f}"
    delta_text = "" if not deltas else f" at δ = {max(deltas):g}"
    small_cell = (
        "not assessed" if not releases
        else ("low" if min(ks, default=0) >= 10 and min(noise, default=0) >= 1 else "moderate")
    )  # fmt: skip
    linkage = "low" if secagg else "moderate"
    noise_text = "–"
    if noise:
        low_std, high_std = min(noise), max(noise)
        noise_text = (
            f"{low_std:.1f}"
            if round(low_std, 1) == round(high_std, 1)
            else f"{low_std:.1f}–{high_std:.1f}"
        )
    risks = [
        {
            "risk": "membership inference",
            "description": (
                "An attacker with the trained models or released aggregates tries to tell "
                "whether a given customer's record was used."
            ),
            "mitigations": [
                f"DP-SGD in every store; lifetime {eps_text}{delta_text} per store (PRV "
                "accountant), enforced by each store's ledger",
                "per-purpose budget caps; requests beyond them are refused",
                "consent filter and erasure exclusion at the boundary",
            ],
            "rating": _rating(max_eps, 1.0, 8.0),
        },
        {
            "risk": "small-cell re-identification",
            "description": (
                "A released count of very few customers singles them out, or differences "
                "between releases reveal one customer."
            ),
            "mitigations": [
                f"per-store discrete Gaussian noise on every count (noise std {noise_text})",
                "cells whose noisy total is below max(k, 3 noise stds) are suppressed "
                f"(k ≥ {min(ks) if ks else '–'}; {suppressed} cell(s) suppressed)",
                "analytics ε counted in the same lifetime ledger as the models",
            ],
            "rating": small_cell,
        },
        {
            "risk": "linkage",
            "description": (
                "Outputs are joined with other data (or across stores) to re-identify "
                "customers through quasi-identifiers or pseudonyms."
            ),
            "mitigations": [
                "direct identifiers dropped; quasi-identifiers generalised (age band, region, "
                "postcode prefix, month)",
                "pseudonyms keyed per store; keys never leave the store",
                "records never leave the store; only DP-noised updates or aggregates do"
                + (", summed under SecAgg+" if secagg else ""),
            ],
            "rating": linkage,
        },
    ]
    limitations = sorted(
        {
            str(text)
            for card in src.cards.values()
            for text in card.get("limitations") or []
            if isinstance(text, str)
        }
    )
    if not verified:
        residual = (
            "Cannot be assessed: the audit trail did not verify, so the figures below may not "
            "reflect what was done. Investigate the findings in section 8 first."
        )
    else:
        worst = max(
            (str(r["rating"]) for r in risks if r["rating"] != "not assessed"),
            key=lambda rating: ("low", "moderate", "elevated").index(rating),
            default="not assessed",
        )
        residual = (
            f"Overall residual risk: {worst}. The processing uses de-identified (not "
            "anonymised) personal information inside each store; what leaves a store is "
            f"protected by differential privacy ({eps_text}{delta_text} per store over its "
            "lifetime) and, for analytics, by small-cell suppression. The ε values are "
            "worst-case upper bounds from the accountant, not measured attack success; no "
            "empirical membership-inference audit has been run. A customer who shops at several "
            "stores is protected separately in each (ε composes across stores)."
        )
    return {
        "regulation": "GDPR Art. 35; PIPL Art. 55, 56",
        "risks": risks,
        "residual_risk": residual,
        "measured": measured,
        "model_limitations": limitations,
        "rating_rule": (
            "membership inference: low if the largest lifetime ε ≤ 1, moderate if ≤ 8, else "
            "elevated; small-cell: low if every release has k ≥ 10 and noise std ≥ 1; linkage: "
            "low with SecAgg+, else moderate"
        ),
    }


# -- the document ----------------------------------------------------------------------------
def build_report(
    run_dir: Path,
    stores_dir: Path | None = None,
    *,
    controller: str | None = None,
    dpo: str | None = None,
) -> dict[str, Any]:
    """The compliance report of the run in ``run_dir`` (and the stores under ``stores_dir``).

    ``stores_dir`` is the chain directory holding the store directories; without it the report
    covers the coordinator's records only and verification fails on the unresolved references
    to the store logs. Raises :class:`ConfigError` when ``run_dir`` is not a run directory
    (no ``audit.jsonl``) or a directory does not exist.
    """
    from fedcrm import __version__
    from fedcrm.audit.verify import verify_tree

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    if not (run_dir / AUDIT_LOG_NAME).is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {AUDIT_LOG_NAME})")
    if stores_dir is not None:
        stores_dir = Path(stores_dir)
        if not stores_dir.is_dir():
            raise ConfigError(f"{stores_dir}: no such directory")
    controller = _check_contact(controller, "controller")
    dpo = _check_contact(dpo, "DPO contact")
    paths = _Paths(run_dir, stores_dir)
    src = _Sources(run_dir, stores_dir)
    verification = verify_tree(run_dir, extra_dirs=[stores_dir] if stores_dir else [])
    if stores_dir is None:
        src.notes.append(
            "no chain directory was given (--stores): the stores' logs, ledgers and erasure "
            "registers are not covered and their log references cannot be checked"
        )

    document: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "generated_at": _now(),
        "generator": f"fedcrm {__version__}",
    }
    document["controller"] = _controller(src, controller, dpo, paths)
    document["processing"] = _processing(src)
    document["consent"] = _consent(src)
    document["deidentification"] = _deidentification(src)
    document["dp_ledger"] = _dp_ledger(src)
    document["analytics"] = _analytics(src)
    document["secure_aggregation"] = _secure_aggregation(
        src, verification, paths, document["deidentification"]
    )
    document["audit_integrity"] = _audit_integrity(src, verification, paths)
    document["erasure"] = _erasure(src)
    document["impact_assessment"] = _impact(document, src)
    first = verification.findings[0] if verification.findings else None
    document["summary"] = {
        "verification_ok": bool(verification.ok),
        "verification": (
            f"{len(verification.logs)} audit log(s) verified: every entry signed and chained, "
            "every recorded head found"
            if verification.ok
            else f"{len(verification.findings)} problem(s) in {len(verification.logs)} audit "
            "log(s); first: " + paths.text(first.describe() if first else "no audit log found")
        ),
        "run_id": src.run_id,
        "stores": [s["label"] for s in document["controller"]["stores"]],
        "period": document["controller"]["report_period"],
        "max_lifetime_epsilon": document["impact_assessment"]["measured"]["max_lifetime_epsilon"],
        "released_queries": document["impact_assessment"]["measured"]["released_queries"],
        "erasure_requests": document["impact_assessment"]["measured"]["erasure_requests"],
    }
    document["notes"] = list(dict.fromkeys(src.notes))
    return _plain(document)


def _plain(value: Any) -> Any:
    """JSON values only (tuples to lists, non-finite floats to None, keys to strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# -- writing ---------------------------------------------------------------------------------
def default_report_path(run_dir: Path, fmt: str) -> Path:
    """``RUN/report.html`` or ``RUN/report.json``."""
    return Path(run_dir) / f"report.{_check_format(fmt)}"


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def write_report(document: Mapping[str, Any], path: Path, fmt: str) -> Path:
    """Write ``document`` as ``fmt`` (``html`` or ``json``) to ``path``, atomically."""
    fmt = _check_format(fmt)
    if fmt == "json":
        text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    else:
        from fedcrm.audit.report_html import render_html

        text = render_html(document)
    path = Path(path)
    with atomic_file(path, mode=0o644) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def iter_sections(document: Mapping[str, Any]) -> Iterable[tuple[int, str, str, Any]]:
    """``(number, key, heading, section)`` of the ten sections, in order."""
    for number, (key, heading) in enumerate(SECTIONS, start=1):
        yield number, key, heading, document.get(key)
