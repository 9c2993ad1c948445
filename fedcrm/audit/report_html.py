"""The compliance report as one self-contained HTML page.

:func:`render_html` turns the document of :func:`fedcrm.audit.report.build_report` into a
single HTML file: inline CSS, no JavaScript, no external resource (the two charts are PNGs
embedded as ``data:`` URIs, drawn with matplotlib's Agg canvas — no pyplot state). Every
value from the document is escaped with :func:`html.escape`.

Charts: (a) the privacy spend of each store against its caps and lifetime budget (from the
DP-ledger section), (b) consent coverage per store: included vs excluded by reason (from the
``consent_filter`` events of the run).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["consent_chart", "privacy_chart", "render_html"]

_PURPOSE_COLOURS = {"churn": "#3b6ea5", "preference": "#e08a2c", "analytics": "#4f9a55"}
_LIFETIME_COLOUR = "#666666"
_REASON_COLOURS = {
    "included": "#4f9a55",
    "no_record": "#b9b9b9",
    "refused": "#e0a030",
    "revoked": "#c94c4c",
    "erased": "#7b5ea7",
}
_OTHER_COLOURS = ("#8c6d31", "#5b8e9e", "#a0522d", "#6b6ecf")

_CSS = """
:root { --ok: #1d7a35; --ok-bg: #e6f4ea; --bad: #b3261e; --bad-bg: #fce8e6;
        --warn-bg: #fff6d6; --line: #d0d4da; --muted: #5f6670; --head: #f1f3f6; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #1f2328;
       margin: 0; background: #fafbfc; font-size: 14px; line-height: 1.45; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 48px; background: #ffffff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-top: 8px; border-top: 2px solid #1f2328; }
h3 { font-size: 16px; margin: 20px 0 6px; }
p.sub, .muted { color: var(--muted); }
p.reg { color: var(--muted); font-size: 12px; margin: 0 0 10px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 14px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 7px; text-align: left;
         vertical-align: top; }
th { background: var(--head); font-weight: 600; }
tbody tr:nth-child(even) td { background: #fbfbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num, .nowrap { white-space: nowrap; }
table.kv th { width: 24%; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px;
              overflow-wrap: anywhere; }
ul { margin: 2px 0; padding-left: 18px; }
.summary { display: grid; grid-template-columns: 1fr 2fr; gap: 0; border: 2px solid var(--line);
           border-radius: 6px; margin: 16px 0 8px; overflow: hidden; }
.summary .status { padding: 18px; font-size: 20px; font-weight: 700; display: flex;
                   flex-direction: column; justify-content: center; }
.summary .status small { font-size: 13px; font-weight: 400; margin-top: 6px; }
.summary .status.ok { background: var(--ok-bg); color: var(--ok);
                      border-right: 4px solid var(--ok); }
.summary .status.bad { background: var(--bad-bg); color: var(--bad);
                       border-right: 4px solid var(--bad); }
.summary table { margin: 0; border: none; }
.summary table th, .summary table td { border: none; border-bottom: 1px solid var(--line); }
.banner { background: var(--bad); color: #ffffff; padding: 14px 18px; border-radius: 6px;
          font-size: 16px; margin: 12px 0; }
.banner ul { margin-top: 6px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; }
.badge.ok { background: var(--ok-bg); color: var(--ok); }
.badge.bad { background: var(--bad-bg); color: var(--bad); }
.badge.warn { background: var(--warn-bg); color: #7a5b00; }
.badge.none { background: var(--head); color: var(--muted); }
.note { background: var(--warn-bg); border-left: 4px solid #d9a400; padding: 8px 12px;
        margin: 8px 0; }
figure { margin: 10px 0 16px; text-align: center; }
figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
nav.toc { columns: 2; font-size: 13px; margin: 8px 0 0; }
nav.toc a { color: #1f4f86; text-decoration: none; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px;
         border-top: 1px solid var(--line); padding-top: 8px; }
"""


class _Raw(str):
    """Markup that is already escaped."""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) < 0.001:
            return f"{value:.2g}"
        return f"{value:.4g}"
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, _Raw):
        return str(value)
    return _e(_fmt(value))


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "none recorded"
) -> str:
    rows = [list(r) for r in rows]
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    out = ["<table><thead><tr>"]
    numeric = [all(_is_num(r[i]) or r[i] is None for r in rows) for i in range(len(headers))]
    for header, num in zip(headers, numeric, strict=True):
        out.append(f"<th{' class=num' if num else ''}>{_e(header)}</th>")
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for value, num in zip(row, numeric, strict=True):
            out.append(f"<td{' class=num' if num else ''}>{_cell(value)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kv(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_cell(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _ul(items: Iterable[Any]) -> _Raw:
    items = list(items)
    if not items:
        return _Raw("–")
    return _Raw("<ul>" + "".join(f"<li>{_cell(i)}</li>" for i in items) + "</ul>")


def _badge(ok: bool | None, yes: str = "ok", no: str = "FAILED") -> _Raw:
    if ok is None:
        return _Raw('<span class="badge none">–</span>')
    return _Raw(f'<span class="badge {"ok" if ok else "bad"}">{_e(yes if ok else no)}</span>')


def _rating(rating: str) -> _Raw:
    cls = {"low": "ok", "moderate": "warn", "elevated": "bad"}.get(rating, "none")
    return _Raw(f'<span class="badge {cls}">{_e(rating)}</span>')


def _mono(value: Any) -> _Raw:
    return _Raw("–") if value is None else _Raw(f'<span class="mono">{_e(value)}</span>')


def _time(value: Any) -> _Raw:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` (+ `` UTC`` when it is UTC); full value as title."""
    if not value:
        return _Raw("–")
    from datetime import datetime

    text = str(value)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return _Raw(_e(text))
    shown = when.strftime("%Y-%m-%d %H:%M:%S")
    offset = when.utcoffset()
    if offset is not None:
        shown += " UTC" if offset.total_seconds() == 0 else when.strftime(" %z")
    return _Raw(f'<span class="nowrap" title="{_e(text)}">{_e(shown)}</span>')


def _run(value: Any) -> _Raw:
    return _Raw("–") if value is None else _Raw(f'<span class="mono nowrap">{_e(value)}</span>')


def _short(digest: Any, n: int = 16) -> _Raw:
    if not digest:
        return _Raw("–")
    text = str(digest)
    return _Raw(f'<span class="mono" title="{_e(text)}">{_e(text[:n])}…</span>')


def _this(row: Mapping[str, Any], key: str = "run_id") -> _Raw:
    mark = ' <span class="badge ok">this run</span>' if row.get("this_run") else ""
    return _Raw(f'<span class="mono nowrap">{_e(row.get(key) or "–")}</span>{mark}')


def _counts(mapping: Mapping[str, Any] | None) -> str:
    if not mapping:
        return "–"
    return " · ".join(f"{k} {_fmt(v)}" for k, v in mapping.items())


# -- charts ----------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def privacy_chart(document: Mapping[str, Any]) -> bytes | None:
    """PNG: ε spent per purpose and lifetime per store, against caps and the lifetime budget."""
    import numpy as np

    stores = [s for s in document["dp_ledger"]["stores"] if s["ledger_found"]]
    if not stores:
        return None
    figure = _figure(11.0, 4.8)
    ax = figure.add_subplot()
    groups = [*_PURPOSE_COLOURS, "lifetime"]
    width = 0.8 / len(groups)
    x = np.arange(len(stores))
    for i, purpose in enumerate(groups):
        offset = x - 0.4 + width * (i + 0.5)
        if purpose == "lifetime":
            spent = [s["lifetime"]["spent"] for s in stores]
            caps = [s["lifetime"]["cap"] for s in stores]
            colour = _LIFETIME_COLOUR
            label = "lifetime (all purposes)"
        else:
            spent = [s["purposes"][purpose]["spent"] for s in stores]
            caps = [s["purposes"][purpose]["cap"] for s in stores]
            colour = _PURPOSE_COLOURS[purpose]
            label = purpose
        cap_values = [np.nan if c is None else c for c in caps]
        if purpose != "lifetime":
            ax.bar(offset, cap_values, width * 0.92, facecolor="none", edgecolor=colour,
                   linestyle="--", linewidth=1.2)  # fmt: skip
        ax.bar(offset, spent, width * 0.92, color=colour, label=f"{label}: ε spent")
        for xi, value in zip(offset, spent, strict=True):
            ax.text(xi, value, f"{value:.2f}", ha="center", va="bottom", fontsize=7)
        if purpose == "lifetime":
            for xi, cap in zip(x, cap_values, strict=True):
                if not np.isnan(cap):
                    ax.hlines(cap, xi - 0.45, xi + 0.45, colors="#b3261e", linestyles="-",
                              linewidth=2)  # fmt: skip
    ax.bar([np.nan], [np.nan], facecolor="none", edgecolor="#333333", linestyle="--",
           label="purpose cap (dashed outline)")  # fmt: skip
    ax.hlines([np.nan], 0, 0, colors="#b3261e", linewidth=2, label="lifetime budget")
    ax.set_xticks(x, [s["store"] for s in stores], rotation=0 if len(stores) <= 4 else 20)
    ax.set_ylabel("privacy loss ε (at the store's δ)")
    ax.set_xlabel("store")
    ax.set_title("Privacy spend per store against its budget (lifetime ledger, PRV accountant)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(figure)


def consent_chart(document: Mapping[str, Any]) -> bytes | None:
    """PNG: customers included vs excluded by reason, per store and consent purpose (this run,
    else the latest recorded filter of each purpose)."""
    import numpy as np

    rows: list[tuple[str, dict[str, int]]] = []
    for store in document["consent"]["stores"]:
        filters = [f for f in store["filters"] if f["this_run"]] or store["filters"]
        latest: dict[str, Mapping[str, Any]] = {}
        for f in filters:
            latest[f["purpose"]] = f
        for purpose, f in latest.items():
            counts = {"included": f["included"] or 0, **(f["excluded"] or {})}
            if f.get("erased_excluded"):
                counts["erased"] = f["erased_excluded"]
            rows.append((f"{store['store']}\n{purpose}", counts))
    if not rows:
        return None
    reasons = ["included", *sorted({k for _, c in rows for k in c if k != "included"})]
    other = iter(_OTHER_COLOURS * 4)
    colours = {r: _REASON_COLOURS.get(r) or next(other) for r in reasons}
    figure = _figure(11.0, 1.2 + 0.55 * len(rows))
    ax = figure.add_subplot()
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for reason in reasons:
        values = np.array([c.get(reason, 0) for _, c in rows], dtype=float)
        label = "included (consent granted)" if reason == "included" else f"excluded: {reason}"
        ax.barh(y, values, left=left, color=colours[reason], label=label, height=0.7)
        for yi, li, v in zip(y, left, values, strict=True):
            if v > 0:
                dark = reason in ("included", "revoked", "erased")
                ax.text(li + v / 2, yi, f"{int(v)}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")  # fmt: skip
        left += values
    ax.set_yticks(y, [label for label, _ in rows], fontsize=8)
    ax.set_xlabel("customers (count)")
    ax.set_title("Consent coverage per store and purpose (consent_filter events of the run)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(figure)


def _img(png: bytes | None, alt: str, caption: str) -> str:
    if png is None:
        return f'<p class="muted">{_e(alt)}: no data to chart.</p>'
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


# -- sections --------------------------------------------------------------------------------
def _section_controller(s: Mapping[str, Any]) -> str:
    run, period = s["run"], s["report_period"]
    out = [
        _kv(
            [
                ("Controller", s["controller"] or "not stated (fedcrm report --controller)"),
                ("DPO / PIPO contact", s["dpo"] or "not stated (fedcrm report --dpo)"),
                (
                    "Report period (first – last event)",
                    _Raw(f"{_time(period['first_event'])} – {_time(period['last_event'])}"),
                ),
                ("Federation (run) id", _mono(s["federation_id"])),
                (
                    "Run",
                    _Raw(
                        f"mode {_e(run['mode'] or '–')}, status {_e(run['status'] or '–')}, "
                        f"started {_time(run['started'])}, ended {_time(run['ended'])}"
                    ),
                ),
                ("Configuration digest", _mono(run["config_digest"])),
                (
                    "Sources",
                    f"run directory {s['sources']['run_dir']}; stores directory "
                    f"{s['sources']['stores_dir'] or 'not given'}; "
                    f"{s['sources']['store_logs_read']} store log(s) read",
                ),
            ]
        ),
        "<h3>Participating stores</h3>",
        _table(
            [
                "store",
                "audit writer",
                "took part in this run",
                "tasks",
                "audit key id",
                "store log read",
            ],
            [
                [
                    _mono(st["label"]),
                    _mono(st["writer"]),
                    st["participated"],
                    ", ".join(st["tasks"]) or "–",
                    _mono(st["audit_key_id"]),
                    st["log_available"],
                ]
                for st in s["stores"]
            ],
        ),
    ]
    return "".join(out)


def _section_processing(s: Mapping[str, Any]) -> str:
    out = []
    for r in s["records"]:
        categories = _ul(f"{c['table']}: {', '.join(c['fields'])}" for c in r["data_categories"])
        versions = _ul(
            f"run {v['run_id']}, {v['rounds']} round(s), target ε {_fmt(v['epsilon_target'])}; "
            + ", ".join(f"{k} sha256 {h[:16]}…" for k, h in v["files_sha256"].items())
            for v in r["model_versions"]
        )
        out.append(f"<h3>{_e(r['name'])}</h3>")
        out.append(
            _kv(
                [
                    ("Purpose (ledger)", r["purpose"]),
                    ("Performed in this run", r["performed_in_run"]),
                    ("Lawful basis", r["lawful_basis"]),
                    (
                        "Data categories (after de-identification)",
                        categories if r["data_categories"] else "not recorded in this run",
                    ),
                    ("Data subjects", _ul(r["subject_categories"])),
                    ("Recipients", r["recipients"]),
                    ("Retention", r["retention"]),
                    ("Security measures", _ul(r["security_measures"])),
                    ("Model versions", versions),
                ]
            )
        )
    return "".join(out)


def _section_consent(s: Mapping[str, Any], chart: str) -> str:
    out = [chart, f"<p>{_e(s['withdrawal_to_exclusion'])}</p>"]
    for store in s["stores"]:
        out.append(f"<h3>Store {_e(store['store'])}</h3>")
        out.append(
            _table(
                [
                    "run",
                    "task",
                    "consent purpose",
                    "as of",
                    "customers",
                    "included",
                    "excluded (by reason)",
                    "excluded",
                    "withdrawn",
                    "included by consent version",
                    "applied",
                ],
                [
                    [
                        _this(f),
                        f["task"],
                        f["purpose"],
                        _time(f["as_of"]),
                        f["total_customers"],
                        f["included"],
                        _counts(f["excluded"]),
                        f["excluded_total"],
                        f["withdrawn"],
                        _counts(f["included_by_policy_version"]),
                        f"{f['applications']}×" + ("" if f["consistent"] else " (counts differ)"),
                    ]
                    for f in store["filters"]
                ],
                empty="no consent_filter event recorded",
            )
        )
        versions = ", ".join(store["consent_versions"]) or "–"
        out.append(
            f'<p class="muted">Consent versions seen: {_e(versions)}. '
            f"Marketing / profiling: {_e(store['marketing'])}.</p>"
        )
    if not s["stores"]:
        out.append('<p class="muted">No store logs were read (pass --stores).</p>')
    return "".join(out)


def _section_deid(s: Mapping[str, Any]) -> str:
    out = [
        f'<div class="note"><strong>Classification: {_e(s["classification"])}.</strong> '
        f"{_e(s['explanation'])}</div>",
        f"<p><strong>Key custody.</strong> {_e(s['key_custody'])}</p>",
    ]
    column_sets: dict[str, list[str]] = {}
    for store in s["stores"]:
        out.append(f"<h3>Store {_e(store['store'])}</h3>")
        out.append(
            _table(
                [
                    "run",
                    "task",
                    "policy",
                    "policy digest",
                    "pseudonym key id",
                    "column actions",
                    "rows released per table",
                ],
                [
                    [
                        _this(st),
                        st["task"],
                        st["policy"],
                        _short(st["policy_digest"]),
                        _mono(st["pseudonym_key_id"]),
                        _counts(st["action_counts"]),
                        _counts(st["output_rows"]),
                    ]
                    for st in store["statements"]
                ],
                empty="no deidentification event recorded",
            )
        )
        if store["statements"]:
            latest = store["statements"][-1]["columns"]
            key = repr(latest)
            column_sets.setdefault(key, []).append(store["store"])
    by_key = {repr(st["statements"][-1]["columns"]): st for st in s["stores"] if st["statements"]}
    for key, labels in column_sets.items():
        columns = by_key[key]["statements"][-1]["columns"]
        who = "all stores" if len(labels) == len(s["stores"]) else ", ".join(labels)
        out.append(f"<h3>Per-column actions ({_e(who)}; latest statement)</h3>")
        out.append(
            _table(
                ["table", "column", "action", "generaliser", "released as"],
                [
                    [
                        c["table"],
                        c["column"],
                        c["action"],
                        c["generaliser"] or "–",
                        c["output"] or "(not released)",
                    ]
                    for c in columns
                ],
            )
        )
    return "".join(out)


def _spent_cap(row: Mapping[str, Any]) -> str:
    cap = "–" if row["cap"] is None else _fmt(row["cap"])
    return f"{row['spent']:.3f} / {cap}"


def _section_ledger(s: Mapping[str, Any], chart: str) -> str:
    out = [chart]
    out.append(
        _table(
            [
                "store",
                "δ",
                "churn ε spent / cap",
                "preference ε spent / cap",
                "analytics ε spent / cap",
                "lifetime ε spent / budget",
                "lifetime remaining",
                "spends",
                "refusals",
                "budget source",
            ],
            [
                [
                    _mono(st["store"]),
                    st["delta"],
                    _spent_cap(st["purposes"]["churn"]),
                    _spent_cap(st["purposes"]["preference"]),
                    _spent_cap(st["purposes"]["analytics"]),
                    _spent_cap(st["lifetime"]),
                    st["lifetime"]["remaining"],
                    st["lifetime"]["entries"],
                    len(st["refusals"]),
                    st["budget_source"],
                ]
                for st in s["stores"]
            ],
            empty="no store ledger was read (pass --stores)",
        )
    )
    if s["stores"]:
        first = s["stores"][0]
        out.append(
            f'<p class="muted">Accountant: {_e(s["accountant"])}. Mechanism: '
            f"{_e(first['mechanism'])}. Privacy unit: {_e(first['privacy_unit'])}. ε values "
            "are the accountant's bound on the composed history at the store's δ.</p>"
        )
    for st in s["stores"]:
        out.append(f"<h3>Store {_e(st['store'])}: spends and cumulative ε</h3>")
        out.append(
            _table(
                [
                    "run",
                    "purpose",
                    "round / query",
                    "noise multiplier σ",
                    "sample rate q",
                    "steps",
                    "clip norm / sensitivity",
                    "δ",
                    "ε purpose (cumulative)",
                    "ε lifetime (cumulative)",
                    "time",
                ],
                [
                    [
                        _run(r["run_id"]),
                        r["purpose"],
                        r["round"] if r["query"] is None else r["query"],
                        r["noise_multiplier"],
                        r["sample_rate"],
                        r["steps"],
                        r["clip_norm"],
                        r["delta"],
                        r["purpose_epsilon_spent"],
                        r["lifetime_epsilon_spent"],
                        _time(r["time"]),
                    ]
                    for r in st["rounds"]
                ],
                empty="no dp_round or analytics_release event recorded",
            )
        )
        out.append(
            f'<p class="muted">The ledger file holds {len(st["entries"])} spend(s) over run(s) '
            f"{_e(', '.join(st['runs']) or '–')}.</p>"
        )
    refusals = [(st["store"], r) for st in s["stores"] for r in st["refusals"]]
    out.append("<h3>Refused requests</h3>")
    out.append(
        _table(
            [
                "store",
                "source",
                "run",
                "purpose",
                "round",
                "scope",
                "requested ε",
                "remaining ε",
                "difference",
                "time",
            ],
            [
                [
                    _mono(store),
                    r["source"],
                    _run(r["run_id"]),
                    r["purpose"],
                    r["round"],
                    r["scope"],
                    r["requested"],
                    r["remaining"],
                    r["difference"],
                    _time(r["time"]),
                ]
                for store, r in refusals
            ],
            empty="no refusal recorded by any store",
        )
    )
    if s["coordinator_refusals"]:
        out.append(
            _table(
                ["round", "store", "reason", "requested ε", "remaining ε", "difference"],
                [
                    [
                        r["round"],
                        r["store"],
                        r["reason"],
                        r["requested"],
                        r["remaining"],
                        r["difference"],
                    ]
                    for r in s["coordinator_refusals"]
                ],
            )
        )
    return "".join(out)


def _section_analytics(s: Mapping[str, Any]) -> str:
    rows = []
    for r in s["releases"]:
        by_store = r["epsilon_by_store"]
        eps = _fmt(r["epsilon_per_store"])
        if by_store and len({v for v in by_store.values()}) > 1:
            eps += " (" + _counts(by_store) + ")"
        status_ok = r["status"] == "released"
        rows.append(
            [
                _mono(r["query"]),
                _badge(status_ok, "released", r["status"]),
                _time(r["time"]),
                eps,
                r["k"],
                r["threshold"],
                r["noise_std"],
                r["cells"],
                r["suppressed"],
                r["stores"],
                r["secure_aggregation"],
                _badge(r["file_matches_log"], "matches", "MISMATCH"),
            ]
        )
    out = [
        _table(
            [
                "query",
                "status",
                "time",
                "ε per store",
                "k",
                "suppression threshold",
                "noise std (total)",
                "cells",
                "suppressed cells",
                "stores",
                "SecAgg+",
                "released file vs logged digest",
            ],
            rows,
            empty="no analytics query was released or refused in this run",
        )
    ]
    reasons = [r for r in s["releases"] if r["reason"]]
    if reasons:
        out.append(_ul(f"{r['query']}: {r['reason']}" for r in reasons))
    if s["unlogged_files"]:
        out.append(
            '<p class="note">Analytics files without a coordinator log entry: '
            f"{_e(', '.join(s['unlogged_files']))}</p>"
        )
    return "".join(out)


def _section_secagg(s: Mapping[str, Any]) -> str:
    failures = sum(d["failures"] for d in s["dropouts"])
    rounds = len(s["dropouts"])
    out = [
        _kv(
            [
                ("Secure aggregation", _badge(s["enabled"], "enabled", "disabled")),
                ("Protocol", s["protocol"]),
                ("Recorded in the config event", _counts(s["recorded_parameters"])),
                (
                    "Protocol parameters (fedcrm constants)",
                    _ul(f"{k}: {v}" for k, v in s["protocol_parameters"].items()),
                ),
                ("Dropouts", f"{failures} failed store update(s) over {rounds} training round(s)"),
                ("TLS", s["tls"]),
                ("Node authentication keys", s["node_keys"]),
            ]
        ),
        "<h3>Key inventory</h3>",
        _table(
            ["holder", "purpose", "algorithm", "key id", "public key", "custody"],
            [
                [
                    _mono(k["holder"]),
                    k["purpose"],
                    k["algorithm"],
                    _mono(k["key_id"]),
                    _mono(k["public_key"]),
                    k["custody"],
                ]
                for k in s["key_inventory"]
            ],
        ),
    ]
    return "".join(out)


def _section_integrity(s: Mapping[str, Any]) -> str:
    status = (
        '<p><span class="badge ok">VERIFIED</span> Every log verifies: entries signed, chained '
        "and complete up to every recorded head.</p>"
        if s["ok"]
        else '<p><span class="badge bad">VERIFICATION FAILED</span> '
        f"{len(s['findings'])} problem(s) found.</p>"
    )
    out = [
        status,
        _table(
            [
                "log",
                "writer",
                "key id",
                "entries",
                "verified",
                "head seq",
                "head hash",
                "pinned by coordinator at seq",
                "entries after pin",
                "result",
                "first problem",
            ],
            [
                [
                    _mono(g["log"]),
                    _mono(g["writer"]),
                    _mono(g["key_id"]),
                    g["entries"],
                    g["verified"],
                    g["head_seq"],
                    _mono(g["head_hash"]),
                    g["pinned_seq"],
                    g["unpinned_entries"],
                    _badge(g["ok"]),
                    g["first_problem"] or "–",
                ]
                for g in s["logs"]
            ],
        ),
    ]
    if s["findings"]:
        out.append("<h3>Findings</h3>")
        out.append(_ul(s["findings"]))
    coordinator = [g for g in s["logs"] if g["writer"] == "coordinator"]
    if coordinator:
        g = coordinator[0]
        out.append(
            f'<p class="note">Keep with this report: the coordinator\'s log head, seq '
            f'{_e(g["head_seq"])}, hash <span class="mono">{_e(g["head_hash"] or "–")}</span>.</p>'
        )
    out.append(
        f'<p class="muted">{_e(s["store_heads_recorded"])} store-log head(s) recorded by the '
        f"coordinator. Verified at {_e(s['verified_at'])}. {_e(s['limits'])}</p>"
    )
    return "".join(out)


def _section_erasure(s: Mapping[str, Any]) -> str:
    out = [f"<p>{_e(s['models_note'])}</p>"]
    rows = []
    for store in s["stores"]:
        for r in store["requests"]:
            versions = _ul(
                _Raw(
                    f'run <span class="mono">{_e(a["run_id"])}</span> ({_e(a["task"])})'
                    + (' <span class="badge warn">this run</span>' if a["this_run"] else "")
                )
                for a in r["affected_model_versions"]
            )
            rows.append(
                [
                    _mono(store["store"]),
                    _mono(r["request_id"]),
                    _time(r["requested_at"]),
                    r["repeat"],
                    r["reason_given"],
                    versions if r["affected_model_versions"] else "none",
                    r["action"],
                    _badge(r["audit_logged"], "logged", "not logged"),
                ]
            )
    out.append(
        _table(
            [
                "store",
                "request id",
                "requested at (UTC)",
                "repeat",
                "reason given",
                "affected model versions",
                "action taken",
                "audit log",
            ],
            rows,
            empty="no erasure request recorded",
        )
    )
    problems = [st for st in s["stores"] if st["problem"]]
    for st in problems:
        out.append(f'<p class="note">Store {_e(st["store"])}: {_e(st["problem"])}.</p>')
    return "".join(out)


_MEASURED_LABELS = {
    "max_lifetime_epsilon": "largest lifetime ε spent by a store",
    "max_epsilon_by_purpose": "largest ε spent per purpose",
    "lifetime_epsilon_by_store": "lifetime ε spent per store",
    "delta": "δ",
    "min_noise_multiplier": "smallest DP-SGD noise multiplier σ",
    "largest_analytics_noise_std": "largest analytics noise std",
    "smallest_analytics_noise_std": "smallest analytics noise std",
    "smallest_k": "smallest suppression k",
    "suppressed_cells": "suppressed analytics cells",
    "released_queries": "released analytics queries",
    "refusals": "refused requests",
    "min_consent_inclusion_rate": "lowest consent inclusion rate (this run)",
    "secure_aggregation": "SecAgg+",
    "erasure_requests": "erasure requests on record",
    "audit_verified": "audit trail verified",
    "empirical_attack_audit": "empirical membership-inference audit",
}


def _section_impact(s: Mapping[str, Any]) -> str:
    measured = []
    for key, value in s["measured"].items():
        if isinstance(value, Mapping):
            value = _counts({k: (None if v is None else round(v, 3)) for k, v in value.items()})
        elif key == "min_consent_inclusion_rate" and value is not None:
            value = f"{value:.0%}"
        elif key == "empirical_attack_audit" and value is None:
            value = "not run (ε are accountant upper bounds)"
        measured.append((_MEASURED_LABELS.get(key, key), value))
    out = [
        _table(
            ["risk", "description", "mitigations", "rating"],
            [
                [r["risk"], r["description"], _ul(r["mitigations"]), _rating(r["rating"])]
                for r in s["risks"]
            ],
        ),
        f'<div class="note"><strong>Residual risk.</strong> {_e(s["residual_risk"])}</div>',
        "<h3>Measured figures</h3>",
        _kv(measured),
    ]
    if s["model_limitations"]:
        out.append("<h3>Documented limitations (model cards)</h3>")
        out.append(_ul(s["model_limitations"]))
    out.append(f'<p class="muted">Rating rule: {_e(s["rating_rule"])}.</p>')
    return "".join(out)


# -- the page --------------------------------------------------------------------------------
def render_html(document: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page (no script, no external resource)."""
    from fedcrm.audit.report import SECTIONS

    summary = document["summary"]
    ok = bool(summary["verification_ok"])
    period = summary["period"]
    run_id = summary["run_id"] or "unknown"
    privacy_png = privacy_chart(document)
    consent_png = consent_chart(document)
    privacy_img = _img(
        privacy_png,
        "Privacy spend per store against its budget",
        "Solid bars: ε spent per purpose and over the store's lifetime; dashed outlines: each "
        "purpose's cap; red line: the store's lifetime budget.",
    )
    consent_img = _img(
        consent_png,
        "Consent coverage per store",
        "Customers included (latest consent event is a grant) and excluded by reason, per store "
        "and consent purpose.",
    )
    bodies = {
        "controller": _section_controller(document["controller"]),
        "processing": _section_processing(document["processing"]),
        "consent": _section_consent(document["consent"], consent_img),
        "deidentification": _section_deid(document["deidentification"]),
        "dp_ledger": _section_ledger(document["dp_ledger"], privacy_img),
        "analytics": _section_analytics(document["analytics"]),
        "secure_aggregation": _section_secagg(document["secure_aggregation"]),
        "audit_integrity": _section_integrity(document["audit_integrity"]),
        "erasure": _section_erasure(document["erasure"]),
        "impact_assessment": _section_impact(document["impact_assessment"]),
    }
    controller = document["controller"]
    status_text = "Audit trail verified" if ok else "AUDIT VERIFICATION FAILED"
    eps = summary["max_lifetime_epsilon"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>fedcrm compliance report — run {_e(run_id)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Compliance report — federated run {_e(run_id)}</h1>",
        f'<p class="sub">GDPR / PIPL audit report generated {_e(document["generated_at"])} by '
        f"{_e(document['generator'])} from the run's audit logs, privacy ledgers and registers "
        f"only ({_e(document['format'])}, version {_e(document['version'])}). It holds no "
        "personal data.</p>",
    ]
    if not ok:
        findings = document["audit_integrity"]["findings"][:5]
        parts.append(
            '<div class="banner"><strong>Audit verification FAILED.</strong> The figures in '
            "this report come from logs that did not verify and may not reflect what was done."
            + _ul(findings)
            + "</div>"
        )
    parts.append(
        '<section class="summary">'
        f'<div class="status {"ok" if ok else "bad"}">{_e(status_text)}'
        f"<small>{_e(summary['verification'])}</small></div>"
        + _kv(
            [
                ("Run id", _mono(run_id)),
                ("Stores", ", ".join(summary["stores"]) or "–"),
                (
                    "Report period",
                    _Raw(f"{_time(period['first_event'])} – {_time(period['last_event'])}"),
                ),
                ("Controller", controller["controller"] or "not stated"),
                ("DPO / PIPO", controller["dpo"] or "not stated"),
                ("Largest lifetime ε of a store", "–" if eps is None else f"{eps:.3f}"),
                ("Analytics releases", summary["released_queries"]),
                ("Erasure requests on record", summary["erasure_requests"]),
            ]
        )
        + "</section>"
    )
    toc = "".join(
        f'<li><a href="#s{n}">{_e(heading)}</a></li>'
        for n, (_, heading) in enumerate(SECTIONS, start=1)
    )
    parts.append(f'<nav class="toc"><ol>{toc}</ol></nav>')
    for n, (key, heading) in enumerate(SECTIONS, start=1):
        regulation = document[key].get("regulation", "")
        parts.append(
            f'<section id="s{n}"><h2>{n}. {_e(heading)}</h2>'
            f'<p class="reg">{_e(regulation)}</p>{bodies[key]}</section>'
        )
    if document.get("notes"):
        parts.append("<h2>Notes on the sources</h2>" + _ul(document["notes"]))
    parts.append(
        "<footer>fedcrm compliance report · reads audit logs, privacy ledgers, erasure registers "
        "and run summaries only, never customer tables · no script, no external resource."
        "</footer></main></body></html>"
    )
    return "\n".join(parts) + "\n"
