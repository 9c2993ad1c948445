"""End-to-end canaries (issue 8): nothing personal crosses the store boundary or reaches a
run's outputs, and a customer who revoked consent changes no number a store releases.

**PII canaries.** A chain of 2 stores x 100 customers is generated and, in each store, four
customers get canary values in every identifying column of the raw tables: the customer id
(in all four tables), name, mobile, e-mail, national id, address, and the line ids of their
purchases. Two consent to model training and analytics, one revoked every consent yesterday
(after the cutoff: consent is checked at processing time) and one never consented to either.
Then, as an operator would: ``fedcrm -v train`` (Flower's simulation engine on Ray: churn
model under DP-SGD and SecAgg+, 1 round, then two analytics queries under SecAgg+, then the
plot; only the centralized / local-only baselines are left out: simulation-only references
that read the stores' tables in this process) and ``fedcrm -v report`` (HTML, then JSON).
Meanwhile Flower's ``InMemoryGrid.push_messages`` / ``pull_messages`` — the coordinator's end
of the transport, below fedcrm's own grid wrapper — are wrapped to serialise every message in
both directions (protobuf, as on the wire) at the moment it crosses.

Searched for every canary under every encoding of ``tests/canaries.py`` (UTF-8/16/32, JSON
escapes, HTML references, URL encoding, hex, base64 at each alignment, MD5/SHA-1/SHA-256,
case and phone-number spellings), and for the store-key pseudonyms of the canary customers:

- every message, coordinator → store and store → coordinator;
- every file under the run directory, binary-safe (inside zip archives such as ``.npz`` and
  ``.pt``, PNG text chunks, the data-URI images of the HTML report) and the coordinator's
  key directory;
- the logs: every logging record of the process (``-v``: DEBUG; Python warnings and Flower
  included), the commands' whole output, and the stores' own output (the Ray session's
  worker logs);
- the two compliance reports;
- the stores' private files, except the keys and the pseudonym map, whose job is to hold ids
  (the map holds exactly the consenting canary customers).

Zero canaries may be found. Controls show that each search can fail: the consenting canary
customers' data provably went into this run (the stores' participation logs), the captured
messages hold what the protocol is known to carry, and the same searches find the canaries
in the raw store files and the pseudonym map, a canary planted in a captured message (either
direction), and one planted in a copy of every kind of file the run directory holds.

**Consent canaries.** Three copies of one store (150 customers, one fixed pseudonym key, so
that pseudonyms, the held-out split and the choice of R are the same each time): **P** where
customer R consents (R is in the training side of the split and in the analytics population),
**A** where R revoked every consent yesterday, **B** where R is removed from every raw table.
The store's real ClientApp (``build_client_app``, its mods and egress guard included) is
called in-process with the messages a coordinator sends, built with the coordinator's own
functions: every analytics query (budget query, answer), then the churn and preference models
(budget query, one training round from the initial model, evaluation, privacy report). Two
sources of randomness are fixed, in this process only: DP-SGD gets a seed (``train_dp``
takes one, for tests) and the analytics noise is left out (``discrete_gaussian`` returns the
counts), so a reply carries the store's exact pre-noise answer; σ planning is memoised (a pure
function; it saves time).

Compared: every array (bit for bit) and every value of every reply, except what differs
between any two runs on identical data (the store's audit-log head: a hash chain over
time-stamped entries and its own signing key; wall-clock timings). A equals B for every
reply but one: ``consent_coverage``, the census of consent records (docs/analytics.md),
counts R once as a customer on file and in no purpose R withdrew — pinned by its own test.
The control: P differs from B (both models' training size and update, the analytics counts by
exactly R); and A == B under seeded noise shows that the comparison is deterministic, so a
difference is the data's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import io
import itertools
import json
import logging
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from canaries import Canary, Hit, find, scan_blobs, scan_tree
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.common import EvaluateIns, FitIns, Scalar, ndarrays_to_parameters
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.superlink.grid.inmemory_grid import InMemoryGrid
from typer.testing import CliRunner

from fedcrm import federation
from fedcrm.cli import app as cli
from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.data.store import load_store
from fedcrm.errors import PrivacyWarning
from fedcrm.privacy.consent import filter_by_consent
from fedcrm.privacy.erasure import runs_including
from fedcrm.privacy.keys import PSEUDONYM_KEY_NAME, StoreKeys
from fedcrm.privacy.pseudonyms import STORE_DOMAIN, keyed_pseudonyms
from fedcrm.synthetic.chain import ChainParams, generate_chain

pytestmark = pytest.mark.slow

TABLES = ("customers", "transactions", "interactions", "consents")
PURPOSES = ("analytics", "model_training", "marketing")
ROLES = ("consenting-1", "consenting-2", "revoked", "never-consented")
CONFIG = """
[training]
rounds = 1
batch_size = 32
[server]
optimizer = "fedavg"
[preference]
enabled = false
[analytics]
queries = ["lifecycle_funnel", "category_shares"]
epsilon = 1.0
k = 0
"""


# -- planting ------------------------------------------------------------------------------
def _rewrite(store: Path, edit: Callable[[str, pd.DataFrame], pd.DataFrame]) -> None:
    """Rewrite the store's raw tables in place (its private directory is kept)."""
    data = load_store(store)
    for name in TABLES:
        frame = getattr(data, name)
        edit(name, frame).reset_index(drop=True).to_parquet(store / f"{name}.parquet", index=False)


def _revocations(frame: pd.DataFrame, customer: str) -> pd.DataFrame:
    """``consents`` with one refusal per purpose appended, recorded yesterday."""
    when = (pd.Timestamp.now() - pd.Timedelta(days=1)).floor("s")
    version = frame.loc[frame["customer_id"] == customer, "policy_version"].iloc[-1]
    rows = pd.DataFrame(
        {"customer_id": customer, "purpose": list(PURPOSES), "granted": False,
         "timestamp": when, "source": "app_privacy_center", "policy_version": version}
    )  # fmt: skip
    rows = rows.astype({c: frame[c].dtype for c in rows.columns})
    return pd.concat([frame, rows], ignore_index=True)


def _pick(store: Path) -> dict[str, str]:
    """Four customers by role, among those who bought most in the year before the cutoff."""
    data = load_store(store)
    now = pd.Timestamp.now()
    allowed = [
        set(filter_by_consent(data, p, now).customer_ids) for p in ("analytics", "model_training")
    ]
    end = pd.Timestamp(data.manifest["window"]["end"]) - pd.Timedelta(days=90)
    recent = data.transactions["timestamp"].between(end - pd.Timedelta(days=365), end)
    busy = data.transactions.loc[recent, "customer_id"].value_counts().index
    both = [c for c in busy if all(c in a for a in allowed)]
    neither = [c for c in busy if not any(c in a for a in allowed)]
    return dict(zip(ROLES, [*both[:3], neither[0]], strict=True))


def _code(*parts: object) -> str:
    """A code of 12 hex digits unique to ``parts``.

    Every canary differs from every other from its first few characters on: were two to
    share a long prefix, a compressed file holding one of them could spell the other by
    chance (a literal prefix followed by the right tag byte).
    """
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12].upper()


def _digits(*parts: object, n: int) -> str:
    return str(int(_code(*parts), 16) % 10**n).zfill(n)


def _plant_pii(store: Path, s: int) -> tuple[dict[str, str], list[Canary]]:
    """Canary values for the four customers of :func:`_pick`; returns {role: canary id}."""
    picked = _pick(store)
    ids, lines, values = {}, {}, {}
    for j, old in enumerate(picked.values()):
        ids[old] = f"{_code(s, j, 'id')}-CANARY-ZX81"
        lines[old] = f"{_code(s, j, 'line')}-CANARY-ZX81-"
        phone = _digits(s, j, "mobile", n=8)
        values[old] = {
            "name": f"金丝雀{_code(s, j, 'name')[:6]}",
            "mobile": f"+86 139 {phone[:4]} {phone[4:]}",
            "email": f"canary.{_code(s, j, 'email').lower()}@example.invalid",
            "national_id": f"110101{_digits(s, j, 'national', n=12)}",
            "address": f"上海市{_code(s, j, 'address')}路金丝雀号",
        }

    def edit(name: str, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        if name == "consents":
            frame = _revocations(frame, picked["revoked"])
        if name == "customers":
            for old, columns in values.items():
                row = frame["customer_id"] == old
                for column, value in columns.items():
                    frame.loc[row, column] = value
        if name == "transactions":
            for old, prefix in lines.items():
                row = frame["customer_id"] == old
                frame.loc[row, "transaction_id"] = [
                    f"{prefix}{k:04d}" for k in range(int(row.sum()))
                ]
        frame["customer_id"] = frame["customer_id"].replace(ids)
        return frame

    _rewrite(store, edit)
    canaries = [Canary("customer_id", new) for new in ids.values()]
    canaries += [Canary("transaction_id", prefix) for prefix in lines.values()]
    for columns in values.values():
        for column, value in columns.items():
            extra: tuple[str, ...] = ()
            if column == "mobile":
                digits = value.replace(" ", "")[3:]
                extra = (
                    digits,
                    "+86" + digits,
                    "86" + digits,
                    f"{digits[:3]}-{digits[3:7]}-{digits[7:]}",
                )
            canaries.append(Canary(column, value, extra))
    return {role: ids[old] for role, old in picked.items()}, canaries


# -- capturing -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Crossing:
    """One message as it crossed the boundary, serialised (protobuf) on the spot."""

    direction: str  # "to store" | "to coordinator"
    message_type: str
    blob: bytes


def _serialise(message: Message) -> bytes:
    return message_to_proto(message).SerializeToString()


def _parse(blob: bytes) -> Message:
    from flwr.proto.message_pb2 import Message as ProtoMessage

    proto = ProtoMessage()
    proto.ParseFromString(blob)
    return message_from_proto(proto)


@contextlib.contextmanager
def _boundary() -> Iterator[tuple[list[Crossing], list[Path]]]:
    """Every message the coordinator pushes and every reply it pulls, and the Ray session."""
    crossings: list[Crossing] = []
    sessions: list[Path] = []
    push, pull = InMemoryGrid.push_messages, InMemoryGrid.pull_messages

    def note_session() -> None:
        import ray

        if ray.is_initialized():
            runtime = ray.get_runtime_context()
            session = Path(runtime.get_temp_dir()) / runtime.get_session_name()
            if session not in sessions:
                sessions.append(session)

    def pushed(self: InMemoryGrid, messages: Any) -> Any:
        messages = list(messages)
        for m in messages:
            crossings.append(Crossing("to store", m.metadata.message_type, _serialise(m)))
        note_session()
        return push(self, messages)

    def pulled(self: InMemoryGrid, message_ids: Any) -> Any:
        replies = list(pull(self, message_ids))
        for m in replies:  # now: Flower's legacy workflows consume a reply's records
            crossings.append(Crossing("to coordinator", m.metadata.message_type, _serialise(m)))
        return replies

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(InMemoryGrid, "push_messages", pushed)
        patch.setattr(InMemoryGrid, "pull_messages", pulled)
        yield crossings, sessions


@contextlib.contextmanager
def _logs(patch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Every logging record of this process, unwrapped, while ``fedcrm -v`` commands run.

    The CLI configures logging itself (root at DEBUG with ``-v``, Python warnings through
    logging, Flower through its own handler only): this handler is added once it has, and
    the logging state is restored afterwards.
    """
    cli_module = importlib.import_module("fedcrm.cli.app")
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root, flwr = logging.getLogger(), logging.getLogger("flwr")
    saved = (root.handlers[:], root.level, flwr.handlers[:], flwr.filters[:], flwr.propagate)
    quiet = cli_module._quiet_third_parties

    def configured() -> None:
        quiet()
        root.addHandler(handler)
        flwr.addHandler(handler)

    patch.setattr(cli_module, "_quiet_third_parties", configured)
    # logging.captureWarnings(True) is a no-op while an earlier capture in this process is
    # still recorded (e.g. an earlier test's CLI run): start from none, so the CLI's applies
    logging.captureWarnings(False)
    try:
        yield text
    finally:
        root.handlers[:], flwr.handlers[:], flwr.filters[:] = saved[0], saved[2], saved[3]
        root.setLevel(saved[1])
        flwr.propagate = saved[4]
        logging.captureWarnings(False)


# -- the federated run ---------------------------------------------------------------------
def _without_baselines(run_federation: Callable[..., Any]) -> Callable[..., Any]:
    """``fedcrm train`` minus the centralized and local-only baselines: simulation-only
    references that read the stores' tables directly in this process (no boundary to
    cross) and would take most of the test's time."""

    @functools.wraps(run_federation)
    def run(*args: Any, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return run_federation(*args, overrides={**(overrides or {}), "baselines": False}, **kwargs)

    return run


@dataclass
class Federated:
    chain: Path
    run: Path
    home: Path  # the coordinator's home: its audit key directory
    ids: dict[str, dict[str, str]]  # store -> role -> canary customer id
    pii: list[Canary]
    pseudonyms: list[Canary]
    crossings: list[Crossing]
    logs: dict[str, bytes]
    sessions: list[Path]  # the Ray session of the run: the stores' logs

    @property
    def canaries(self) -> list[Canary]:
        return self.pii + self.pseudonyms


@pytest.fixture(scope="module")
def federated(tmp_path_factory: pytest.TempPathFactory) -> Federated:
    base = tmp_path_factory.mktemp("canaries")
    chain, run, home = base / "chain", base / "run", base / "home"
    generate_chain(chain, ChainParams(stores=2, customers_per_store=100, seed=8))
    ids, pii = {}, []
    for s, store in enumerate(discover_stores(chain)):
        ids[store.name], planted = _plant_pii(store, s)
        pii += planted
    config = base / "run.toml"
    config.write_text(CONFIG, encoding="utf-8")
    runner = CliRunner()
    import matplotlib.font_manager  # noqa: F401 - its cache is found before HOME moves

    outputs = []
    with pytest.MonkeyPatch.context() as patch, _boundary() as (crossings, sessions):
        patch.setenv("HOME", str(home))  # the coordinator's audit key: ~/.fedcrm/coordinator
        patch.setattr(federation, "run_federation", _without_baselines(federation.run_federation))
        with _logs(patch) as records:
            for args in (
                ["train", "--data", str(chain), "--out", str(run), "--config", str(config)],
                ["report", str(run), "--stores", str(chain)],
                ["report", str(run), "--stores", str(chain), "--format", "json"],
            ):
                result = runner.invoke(cli, ["-v", *args], catch_exceptions=False)
                assert result.exit_code == 0, result.output
                outputs.append(result.output)
            # a warning raised now goes where the run's warnings went (Python shows each
            # warning once per place and process, so the run's own may have been shown by an
            # earlier test): the log capture holds warnings
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.warn("probe: warnings reach the captured log", PrivacyWarning,
                              stacklevel=1)  # fmt: skip
    pseudonyms = []
    for store in discover_stores(chain):
        key = StoreKeys.load_or_create(StoreLayout(store)).pseudonym_key
        for role, customer in ids[store.name].items():
            (value,) = keyed_pseudonyms(key, STORE_DOMAIN, [customer])
            pseudonyms.append(Canary(f"pseudonym of {role}", value))
    logs = {"logging": records.getvalue(), "command output": "\n".join(outputs)}
    return Federated(
        chain, run, home, ids, pii, pseudonyms, crossings,
        {name: text.encode("utf-8") for name, text in logs.items()}, sessions,
    )  # fmt: skip


def _report(hits: list[Hit]) -> str:
    return "\n".join(str(h) for h in hits[:20])


def test_the_canary_customers_data_went_into_the_run(federated: Federated) -> None:
    """The precondition: the consenting canary customers were trained on and counted."""
    run_id = str(json.loads((federated.run / "summary.json").read_text())["run_id"])
    for store in discover_stores(federated.chain):
        layout, ids = StoreLayout(store), federated.ids[store.name]
        for role in ("consenting-1", "consenting-2"):
            tasks = {r["task"] for r in runs_including(layout, ids[role]) if r["run_id"] == run_id}
            assert tasks == {"churn", "analytics"}, (store.name, role, tasks)
        for role in ("revoked", "never-consented"):
            assert runs_including(layout, ids[role]) == [], (store.name, role)
    assert len(federated.pii) == 2 * 4 * 7


def test_every_message_in_both_directions_was_captured_with_its_content(
    federated: Federated,
) -> None:
    kinds = {"query.privacy_budget", "train", "evaluate", "query.privacy_report",
             "query.analytics_budget"}  # fmt: skip
    sent = [c for c in federated.crossings if c.direction == "to store"]
    received = [c for c in federated.crossings if c.direction == "to coordinator"]
    assert {c.message_type for c in sent} == kinds == {c.message_type for c in received}
    assert len(sent) == len(received) > 20  # every instruction answered (SecAgg+ stages too)
    outgoing, incoming = b"".join(c.blob for c in sent), b"".join(c.blob for c in received)
    # what the protocol is known to carry: the plans out, the numbers and arrays back
    for needle in (b"plan.feature-spec", b"lifecycle_funnel", b"category_shares", b"\x93NUMPY"):
        assert needle in outgoing, needle
    for needle in (b"num_train", b"noise_scale", b"run_epsilon", b"\x93NUMPY"):
        assert needle in incoming, needle


def test_no_canary_in_any_message_crossing_the_boundary(federated: Federated) -> None:
    blobs = {
        f"message {i} {c.direction} {c.message_type}": c.blob
        for i, c in enumerate(federated.crossings)
    }
    hits = scan_blobs(blobs, federated.canaries)
    assert hits == [], _report(hits)


def test_the_message_search_finds_a_canary_planted_in_either_direction(
    federated: Federated,
) -> None:
    """The control of the test above, on real captured messages."""
    canary = next(c for c in federated.pii if c.kind == "name")
    for direction in ("to store", "to coordinator"):
        crossing = next(
            c for c in federated.crossings if c.direction == direction and c.message_type == "train"
        )
        as_config, as_array = _parse(crossing.blob), _parse(crossing.blob)
        as_config.content.config_records["leak"] = ConfigRecord({"note": canary.value})
        as_array.content.array_records["leak"] = ArrayRecord([np.array([canary.value])])
        assert find(_serialise(as_config), [canary], direction)
        hits = scan_blobs({direction: _serialise(as_array)}, [canary])
        assert {h.form for h in hits} == {"utf-32-le"}  # numpy keeps str arrays as UTF-32


def test_no_canary_in_any_file_of_the_run_directory(federated: Federated) -> None:
    suffixes = {p.suffix for p in federated.run.rglob("*") if p.is_file()}
    assert {".npz", ".pt", ".png", ".json", ".jsonl", ".html", ".csv", ".md"} <= suffixes
    hits = scan_tree(federated.run, federated.canaries)
    hits += scan_tree(federated.home, federated.canaries)
    assert hits == [], _report(hits)


def test_no_canary_in_the_logs(federated: Federated) -> None:
    logs = dict(federated.logs)
    assert re.search(rb"^fedcrm\.server\.\S+ INFO ", logs["logging"], re.M)  # the coordinator's
    assert b"PrivacyWarning: probe" in logs["logging"]  # warnings, through logging
    assert b"flwr DEBUG" in logs["logging"]  # and Flower's
    assert b"audit verification ok" in logs["command output"]
    assert len(federated.sessions) == 1
    worker_logs = sorted((federated.sessions[0] / "logs").glob("worker-*"))
    assert worker_logs and any(p.stat().st_size for p in worker_logs)  # the stores' output
    hits = scan_blobs(logs, federated.canaries)
    hits += scan_tree(federated.sessions[0] / "logs", federated.canaries)
    assert hits == [], _report(hits)


def test_no_canary_in_the_compliance_reports(federated: Federated) -> None:
    html = (federated.run / "report.html").read_bytes()
    raw = (federated.run / "report.json").read_bytes()
    document = json.loads(raw)
    assert document["summary"]["verification_ok"] is True
    assert document["consent"]  # the consent evidence is there, in counts
    assert html.count(b"data:image/png;base64,") >= 1
    hits = scan_blobs({"report.html": html, "report.json": raw}, federated.canaries)
    assert hits == [], _report(hits)


def test_no_canary_in_the_stores_private_files_but_the_pseudonym_map(
    federated: Federated,
) -> None:
    """Inside each store, only the pseudonym map (whose job it is, for local scoring) holds
    canary ids or pseudonyms — exactly the consenting customers' — and the keys are not
    searched. The audit log, egress log, ledger, release and participation logs hold none."""
    for store in discover_stores(federated.chain):
        layout, ids = StoreLayout(store), federated.ids[store.name]
        hits = scan_tree(layout.private_dir, federated.canaries,
                         skip=[layout.pseudonym_map_path, layout.keys_dir])  # fmt: skip
        assert hits == [], _report(hits)
        found = scan_blobs({"map": layout.pseudonym_map_path.read_bytes()}, federated.canaries)
        consenting = ("consenting-1", "consenting-2")
        assert {h.value for h in found if h.kind == "customer_id"} == {ids[r] for r in consenting}
        assert {h.kind for h in found if h.kind.startswith("pseudonym")} == {
            f"pseudonym of {r}" for r in consenting
        }


def test_the_file_search_sees_inside_every_kind_of_file_the_run_holds(
    federated: Federated, tmp_path: Path
) -> None:
    """The control of the file tests: a canary planted in a copy of each kind of file."""
    import base64

    import torch
    from PIL import Image, PngImagePlugin

    canary = next(c for c in federated.pii if c.kind == "address")
    run = tmp_path / "run"
    shutil.copytree(federated.run, run)
    (run / "model" / "churn.npz").write_bytes(_npz_with(canary.value))
    torch.save({"note": canary.value}, run / "model" / "churn.pt")
    png = run / "training.png"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Comment", canary.value, zip=True)
    Image.open(png).save(png, pnginfo=info)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    (run / "summary.json").write_text(json.dumps({**summary, "note": canary.value}), "utf-8")
    html = (run / "report.html").read_text(encoding="utf-8")
    uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    (run / "report.html").write_text(html.replace("</body>", f'<img src="{uri}"></body>'), "utf-8")
    hits = {Path(h.where.split("!")[0]).name for h in scan_tree(run, [canary])}
    assert hits == {"churn.npz", "churn.pt", "training.png", "summary.json", "report.html"}
    # and in the raw store files, where the canaries were planted (snappy-compressed parquet)
    tables = {
        str(path): path.read_bytes()
        for store in discover_stores(federated.chain)
        for path in sorted(store.glob("*.parquet"))
    }
    raw = scan_blobs(tables, federated.pii)
    assert {(h.kind, h.value) for h in raw} == {(c.kind, c.value) for c in federated.pii}


def _npz_with(value: str) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, note=np.array([value]))
    return buffer.getvalue()


# -- consent canaries ----------------------------------------------------------------------
RUN_ID = 4242
#: Reply fields that differ between any two runs, identical data or not: the audit-log head
#: (a hash chain over time-stamped entries, and the id of the store copy's own signing key)
#: and wall-clock timings.
NOT_DETERMINISTIC = ("audit_hash_", "audit_key_")
TIMINGS = "_seconds"
SERVE_CONFIG = {"lifetime-epsilon": 100.0, "secagg": False, "min-stores": 1, "num-rounds": 1,
                "batch-size": 32, "analytics-epsilon": 0.5}  # fmt: skip
#: The query that by definition reads the whole consent ledger (see the tests below).
CENSUS = ("consent_coverage", "answer")

Replies = dict[tuple[str, str], dict[str, Any]]


def _numbers(reply: Message) -> dict[str, Any]:
    """Every array and value of a reply, by ``record.key`` (non-deterministic fields out)."""
    assert not reply.has_error(), reply.error
    out: dict[str, Any] = {}
    content = reply.content
    for records in (content.array_records, content.metric_records, content.config_records):
        for name, record in records.items():
            for key, value in record.items():
                if key.startswith(NOT_DETERMINISTIC) or key.endswith(TIMINGS):
                    continue
                out[f"{name}.{key}"] = value.numpy() if hasattr(value, "numpy") else value
    return out


def _serve(chain: Path, models: tuple[str, ...] = ("churn", "preference")) -> Replies:
    """The store's ClientApp, in-process, asked what a coordinator asks: for every analytics
    query its budget query and its answer (as ``fedcrm analytics`` does; first, so that every
    copy's ledger holds the same analytics spends and the accountant's cache serves them),
    then for each model a budget query, one training round from the initial model, an
    evaluation and the privacy report."""
    from fedcrm.analytics.plan import QueryPlan, context_to_json
    from fedcrm.analytics.queries import QUERY_NAMES
    from fedcrm.clients.app import (
        ANALYTICS_BUDGET_QUERY,
        BUDGET_QUERY,
        REPORT_QUERY,
        build_client_app,
    )
    from fedcrm.server.analytics import query_context_for
    from fedcrm.server.app import churn_plan, initial_arrays, resolve_feature_spec
    from fedcrm.server.preference import preference_task_plan, resolve_vocabulary
    from fedcrm.server.run_config import FederationConfig

    run_config = {**SERVE_CONFIG, "data-dir": str(chain), "run-dir": str(chain.parent / "run")}
    config = FederationConfig.from_run_config(run_config)
    store_app = build_client_app(run_config)
    context = Context(run_id=RUN_ID, node_id=7, node_config={"partition-id": 0},
                      state=RecordDict(), run_config={})  # fmt: skip
    ids = itertools.count()

    def ask(message_type: str, content: RecordDict) -> dict[str, Any]:
        metadata = Metadata(
            run_id=RUN_ID,
            message_id=f"m{next(ids)}",
            src_node_id=0,
            dst_node_id=7,
            reply_to_message_id="",
            group_id="1",
            created_at=time.time(),
            ttl=3600.0,
            message_type=message_type,
        )
        return _numbers(store_app(make_message(metadata, content), context))

    def record(name: str, plan: Any) -> RecordDict:
        return RecordDict({name: ConfigRecord(dict(plan.to_config()))})

    def settings(plan: Any) -> dict[str, Scalar]:
        return {**plan.to_config(), "server-round": 1}

    replies: Replies = {}
    context_json = context_to_json(query_context_for(config))
    for name in QUERY_NAMES:
        query = QueryPlan(name, config.analytics_epsilon, config.delta, config.horizon_days,
                          context_json)  # fmt: skip
        replies[name, "budget"] = ask(ANALYTICS_BUDGET_QUERY, record("query", query))
        template = ndarrays_to_parameters([np.zeros(len(query.query().cells))])
        fit = FitIns(template, settings(query))
        replies[name, "answer"] = ask("train", compat.fitins_to_recorddict(fit, True))
    spec, vocabulary = resolve_feature_spec(config), resolve_vocabulary(config)
    assert vocabulary is not None  # the generated chain declares its taxonomy
    plans = {
        "churn": (churn_plan(config, spec), len(spec), config.seed),
        "preference": (
            preference_task_plan(config, spec, vocabulary),
            len(spec) + len(vocabulary),
            config.seed + 1,
        ),
    }
    for task in models:
        plan, inputs, seed = plans[task]
        _, initial = initial_arrays(plan, inputs, seed)
        model = ndarrays_to_parameters(initial)
        replies[task, "budget"] = ask(BUDGET_QUERY, record("plan", plan))
        replies[task, "train"] = ask(
            "train", compat.fitins_to_recorddict(FitIns(model, settings(plan)), True)
        )
        replies[task, "evaluate"] = ask(
            "evaluate", compat.evaluateins_to_recorddict(EvaluateIns(model, settings(plan)), True)
        )
        replies[task, "report"] = ask(REPORT_QUERY, record("plan", plan))
    return replies


@dataclass
class Consent:
    replies: dict[str, Replies]  # "A" (R revoked), "B" (R removed), "P" (R consents)
    stores: dict[str, Path]
    revoker: str


@pytest.fixture(scope="module")
def consent(tmp_path_factory: pytest.TempPathFactory) -> Consent:
    import fedcrm.analytics.mechanism as mechanism
    import fedcrm.privacy.accounting as accounting
    import fedcrm.privacy.dp_sgd as dp_sgd
    from fedcrm.clients.preparation import PreparationRequest, prepare_store
    from fedcrm.clients.store_agent import eval_mask
    from fedcrm.privacy.keys import load_pseudonym_map

    base = tmp_path_factory.mktemp("consent")
    generate_chain(base / "P", ChainParams(stores=1, customers_per_store=150, seed=13))
    keys = StoreLayout(discover_stores(base / "P")[0]).keys_dir  # one key for P, A and B,
    keys.mkdir(mode=0o700, parents=True)  # fixed: the same pseudonyms, split and R each run
    (keys / PSEUDONYM_KEY_NAME).write_bytes(hashlib.sha256(b"consent canaries").digest())
    (keys / PSEUDONYM_KEY_NAME).chmod(0o600)
    keys.parent.chmod(0o700)
    # R consents to both purposes and is in both populations, on the training side
    shutil.copytree(base / "P", base / "scratch")
    scratch = discover_stores(base / "scratch")[0]
    training = prepare_store(scratch, PreparationRequest(purpose="model_training"))
    analytics = prepare_store(scratch, PreparationRequest(purpose="analytics"))
    names = load_pseudonym_map(StoreLayout(scratch)).customer_id_of
    counted = set(names(pd.Series(analytics.features.customer_ids)))
    side = ~eval_mask(training.features.customer_ids, 0.2)
    trained = names(pd.Series(training.features.customer_ids))[side]
    revoker = min(c for c in trained if c in counted)
    shutil.copytree(base / "P", base / "A")
    _rewrite(discover_stores(base / "A")[0],
             lambda name, f: _revocations(f, revoker) if name == "consents" else f)  # fmt: skip
    shutil.copytree(base / "A", base / "B")
    _rewrite(discover_stores(base / "B")[0], lambda name, f: f[f["customer_id"] != revoker])

    real_train = dp_sgd.train_dp
    memoised = functools.lru_cache(maxsize=None)(accounting.plan_noise_multiplier)
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "DP-SGD noise is seeded": on purpose, here only
        patch.setattr(dp_sgd, "train_dp", lambda model, x, y, config, **kw: real_train(
            model, x, y, dataclasses.replace(config, seed=1234), **kw))  # fmt: skip
        patch.setattr(mechanism, "discrete_gaussian", lambda counts, scale: np.asarray(counts))
        patch.setattr(accounting, "plan_noise_multiplier", memoised)
        replies = {
            "A": _serve(base / "A"),
            "B": _serve(base / "B"),
            "P": _serve(base / "P"),
        }
    stores = {name: discover_stores(base / name)[0] for name in replies}
    return Consent(replies, stores, revoker)


def _differences(x: dict[str, Any], y: dict[str, Any]) -> list[str]:
    keys = set(x) | set(y)
    return sorted(k for k in keys if k not in x or k not in y or not _same(x[k], y[k]))


def _same(a: Any, b: Any) -> bool:
    """Bit for bit for arrays, type and value for numbers and strings."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


def test_the_revoked_customer_took_part_only_while_consenting(consent: Consent) -> None:
    """P used R's data for training and analytics; A (revoked after the cutoff) none of it."""
    p, a = StoreLayout(consent.stores["P"]), StoreLayout(consent.stores["A"])
    tasks = {r["task"] for r in runs_including(p, consent.revoker)}
    assert tasks == {"churn", "preference", "analytics"}
    assert runs_including(a, consent.revoker) == []
    assert consent.revoker in set(load_store(a.root).customers["customer_id"])


def test_a_revoked_customer_changes_no_number_a_store_releases(consent: Consent) -> None:
    """Every reply of A equals B's, arrays bit for bit: the seeded DP-SGD update and its
    weight, the evaluation, budget and privacy numbers of both models, every analytics
    query's exact counts and noise plan — all but the consent census (next test)."""
    a, b = consent.replies["A"], consent.replies["B"]
    assert a.keys() == b.keys() and len(a) == 2 * 4 + 2 * 9
    for key in a.keys() - {CENSUS}:
        assert _differences(a[key], b[key]) == [], key
    for task in ("churn", "preference"):
        update = a[task, "train"]
        assert update["fitres.num_examples.num_examples"] > 0
        assert update["fitres.metrics.refused"] == 0
        assert np.abs(update["fitres.parameters.0"]).sum() > 0  # a real update
        assert "evaluateres.metrics.num_eval" in a[task, "evaluate"]
    assert _differences(a[CENSUS], b[CENSUS]) == ["fitres.parameters.0"]


def test_consent_coverage_is_the_one_answer_a_revoked_customer_changes(
    consent: Consent,
) -> None:
    """``consent_coverage`` is the census of consent records, by design (the
    analytics-consented population cannot measure coverage; docs/analytics.md): "customers
    on file" counts R, and each purpose cell counts consent in force at processing time, so
    R, who withdrew every consent before this run, is counted in none of them. The one
    documented exception to "a revoked customer changes no released number"."""
    a, b, p = (consent.replies[name][CENSUS]["fitres.parameters.0"] for name in "ABP")
    assert (a - b).tolist() == [1, 0, 0, 0]  # on file, and nothing else
    assert (p - b)[0] == 1 and (p - b)[1:3].tolist() == [1, 1]  # consenting R: counted


def test_control_the_same_customer_with_consent_changes_the_released_numbers(
    consent: Consent,
) -> None:
    """With R consenting (P) the numbers do differ from B — and A == B under seeded noise
    shows the comparison is deterministic, so the difference is R's data."""
    p, b = consent.replies["P"], consent.replies["B"]
    for task in ("churn", "preference"):
        assert p[task, "budget"]["budget.num_train"] == b[task, "budget"]["budget.num_train"] + 1
        weight = "fitres.num_examples.num_examples"
        assert p[task, "train"][weight] == b[task, "train"][weight] + 1
        update = {k for k in p[task, "train"] if k.startswith("fitres.parameters.")}
        assert update and update <= set(_differences(p[task, "train"], b[task, "train"]))
    from fedcrm.analytics.queries import SEGMENTS

    # the cells that count each customer of the population once (None: all of them)
    customers = {"lifecycle_funnel": None, "lifecycle_by_format": None,
                 "value_by_lifecycle": None, "churn_by_segment": len(SEGMENTS)}  # fmt: skip
    for query, cells in customers.items():
        more = p[query, "answer"]["fitres.parameters.0"] - b[query, "answer"]["fitres.parameters.0"]
        assert more[:cells].sum() == 1, query  # (tiers are store-relative: others may move)
