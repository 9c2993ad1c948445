"""What the coordinator writes into its run directory.

::

    RUN/
      checkpoints/round_000.npz    the global model after each round (000 = initial), named
      checkpoints/round_001.json   that round's fit and federated-evaluation metrics
      model/churn.npz, churn.pt    the final model (numpy arrays; torch state_dict)
      model/model_card.json, .md   features, data window, privacy parameters, achieved ε, metrics
      refusals.jsonl               stores that declined rounds (budget), with the ledger numbers
      rejections.jsonl             updates the coordinator dropped (malformed, NaN, too large)
      events.jsonl                 exclusions and skipped rounds
      summary.json                 the run's result, read by fedcrm.federation (rounds,
                                   history, privacy; churn baselines and wall_seconds are
                                   added by fedcrm.federation)
      training.png                 AUC and ε per round (fedcrm.server.plots, simulation)

Every file is written whole (temporary sibling, then rename); the JSONL files are appended.
Nothing here holds store data: only model arrays, aggregate metrics and privacy numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedcrm.data.atomic import atomic_file
from fedcrm.errors import ConfigError, OutputExistsError

__all__ = ["MODEL_CARD_FORMAT", "RunDirectory", "read_model_card", "render_model_card"]

MODEL_CARD_FORMAT = "fedcrm.model_card"
_EVENT_FILES = {
    "refused": "refusals.jsonl",
    "rejected": "rejections.jsonl",
    "excluded": "events.jsonl",
    "skipped": "events.jsonl",
}


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python, non-finite floats → None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _dump(payload: Any) -> str:
    return json.dumps(_jsonable(payload), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


class RunDirectory:
    """The run directory of one federated training run, seen by one task's model.

    The churn model (the run's main task) writes ``checkpoints/round_NNN.*``,
    ``model/churn.*`` and ``model/model_card.json``; another task writes
    ``checkpoints/<task>/round_NNN.*``, ``model/<task>.*`` and ``model/<task>_card.json``.
    """

    def __init__(self, root: Path, parameter_names: Sequence[str], task: str = "churn") -> None:
        self.root = Path(root)
        self.parameter_names = list(parameter_names)
        self.task = task

    @property
    def checkpoints_dir(self) -> Path:
        base = self.root / "checkpoints"
        return base if self.task == "churn" else base / self.task

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def model_card_path(self) -> Path:
        name = "model_card.json" if self.task == "churn" else f"{self.task}_card.json"
        return self.model_dir / name

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    def holds_run(self) -> bool:
        """Whether the directory holds a run (finished or not): what ``--fresh`` may replace."""
        return any(p.exists() for p in (self.summary_path, self.checkpoints_dir, self.model_dir))

    def claim(self) -> None:
        """Create the directory; refuse one that already holds a finished run."""
        if self.model_card_path.exists() or self.summary_path.exists():
            raise OutputExistsError(f"{self.root}: holds a finished run; choose another run-dir")
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)

    def _named(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        if len(arrays) != len(self.parameter_names):
            raise ValueError(f"{len(arrays)} arrays for {len(self.parameter_names)} names")
        return dict(zip(self.parameter_names, arrays, strict=True))

    def _write_npz(self, path: Path, arrays: Sequence[np.ndarray]) -> Path:
        with atomic_file(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **self._named(arrays))  # type: ignore[arg-type]  # file: no ".npz" added
        return path

    def _write_text(self, path: Path, text: str) -> Path:
        with atomic_file(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    def write_checkpoint(self, server_round: int, arrays: Sequence[np.ndarray]) -> Path:
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        return self._write_npz(self.checkpoints_dir / f"round_{server_round:03d}.npz", arrays)

    def write_round_metrics(self, server_round: int, payload: Mapping[str, Any]) -> Path:
        return self._write_text(
            self.checkpoints_dir / f"round_{server_round:03d}.json", _dump(payload)
        )

    def append_event(self, kind: str, record: Mapping[str, Any]) -> Path:
        path = self.root / _EVENT_FILES.get(kind, "events.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_jsonable(record), ensure_ascii=False, allow_nan=False) + "\n")
        return path

    def read_events(self, kind: str) -> list[dict[str, Any]]:
        path = self.root / _EVENT_FILES.get(kind, "events.jsonl")
        if not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return [r for r in rows if r.get("kind", kind) == kind]

    def write_final_model(self, arrays: Sequence[np.ndarray]) -> dict[str, Path]:
        """``<task>.npz`` (numpy) and ``<task>.pt`` (a torch state_dict of the same arrays)."""
        import torch

        npz = self._write_npz(self.model_dir / f"{self.task}.npz", arrays)
        state = {k: torch.from_numpy(np.array(a)) for k, a in self._named(arrays).items()}
        pt = self.model_dir / f"{self.task}.pt"
        with atomic_file(pt) as tmp:
            torch.save(state, tmp)
        return {"npz": npz, "torch": pt}

    def write_model_card(self, card: Mapping[str, Any], *, markdown: bool = True) -> list[Path]:
        """The card as JSON, and (churn card) its Markdown reading copy."""
        paths = [self._write_text(self.model_card_path, _dump(card))]
        if markdown:
            md = self.model_card_path.with_suffix(".md")
            paths.append(self._write_text(md, render_model_card(card)))
        return paths

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        return self._write_text(self.summary_path, _dump(summary))


def read_model_card(path: Path) -> dict[str, Any]:
    """A model card written by :meth:`RunDirectory.write_model_card`; :class:`ConfigError`
    naming the file when it is not JSON or not a fedcrm card (a missing file: OSError)."""
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid model card ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != MODEL_CARD_FORMAT:
        raise ConfigError(f"{path}: not a fedcrm model card (format != {MODEL_CARD_FORMAT})")
    return card


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def render_model_card(card: Mapping[str, Any]) -> str:
    """The model card as Markdown (a reading copy of model_card.json)."""
    model, data = card["model"], card["data"]
    fed, privacy = card["federation"], card["privacy"]
    lines = [
        f"# Model card — churn model ({model['architecture']})",
        "",
        f"Run `{card['run_id']}`, created {card['created_at']}.",
        "",
        "## Data",
        f"- Cutoff: {data['cutoff']}; label horizon: {data['horizon_days']} days",
        f"- Stores: {fed['stores']}; held-out share per store: {data['eval_fraction']}",
        f"- Features ({len(data['features'])}): " + ", ".join(f"`{f}`" for f in data["features"]),
        "",
        "## Training",
        f"- Rounds: {fed['rounds']}; server optimizer: {fed['server_optimizer']} "
        f"(lr {fed['server_learning_rate']}); min stores per round: {fed['min_stores']}",
        f"- Secure aggregation (SecAgg+): {'on' if fed['secure_aggregation'] else 'off'}",
        f"- Calibration: {model.get('calibration', 'none')}",
        "",
        "## Privacy",
        f"- Mechanism: {privacy['mechanism']}; unit: {privacy['unit']}",
        f"- Target ε per store for this run: {privacy['epsilon_target']}; δ: {privacy['delta']}; "
        f"accountant: {privacy['accountant']}",
        f"- Clipping norm C: {privacy['clip_norm']}; local epochs: {privacy['local_epochs']}; "
        f"expected batch: {privacy['batch_size']}; learning rate: {privacy['learning_rate']}",
        "",
        "| store | N train | δ | σ | q | steps/round | rounds | ε this run | "
        "churn ε spent / cap | lifetime ε spent / budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in privacy["stores"]:
        lines.append(
            f"| {_fmt(s.get('store', s['node_id']))} | {_fmt(s.get('num_train'))} | "
            f"{_fmt(s.get('delta'))} | {_fmt(s.get('noise_multiplier'))} | "
            f"{_fmt(s.get('sample_rate'))} | {_fmt(s.get('steps_per_round'))} | "
            f"{_fmt(s.get('rounds_trained'))} | {_fmt(s.get('run_epsilon'))} | "
            f"{_fmt(s.get('purpose_epsilon_spent'))} / {_fmt(s.get('purpose_epsilon_cap'))} | "
            f"{_fmt(s.get('lifetime_epsilon_spent'))} / "
            f"{_fmt(s.get('lifetime_epsilon_budget'))} |"
        )
    lines += ["", "## Metrics per round (federated evaluation on held-out customers)", ""]
    lines += ["| round | loss | AUC | Brier | examples | stores |", "|---|---|---|---|---|---|"]
    for r in card["metrics"]["rounds"]:
        ev = r.get("evaluate") or {}
        lines.append(
            f"| {r['round']} | {_fmt(r.get('loss'))} | {_fmt(ev.get('auc'))} | "
            f"{_fmt(ev.get('brier'))} | {_fmt(ev.get('num_examples'))} | {_fmt(ev.get('stores'))} |"
        )
    lines += ["", "## Refusals and rejections", ""]
    lines.append(f"- Refusals (budget): {card['refusals']}; rejected updates: {card['rejections']}")
    lines += ["", "## Limitations", ""]
    lines += [f"- {note}" for note in card.get("limitations", [])]
    return "\n".join(lines) + "\n"
