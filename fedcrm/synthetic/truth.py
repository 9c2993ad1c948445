"""The ground truth of a synthetic chain, written apart from the stores for evaluation only.

``OUT/_ground_truth/`` (a directory starting with ``_`` is never taken for a store) holds:

- ``customers.parquet``: per store member, the hidden truth: cross-store ``person_id``,
  persona, visit rate, dropout rate and time (``NaT`` when alive at the end), discount
  sensitivity, satisfaction, sequence anchor, observed number of lines;
- ``categories.parquet``, ``products.parquet``: the true hierarchy, price model and products;
- ``co_purchase.parquet``: P(next basket line's category | first line's category);
- ``persona_categories.parquet``: each persona's normalised category weights per stage;
- ``personas.parquet``: persona parameters; ``calendar.parquet``: festivals, promotion
  depth and the demand curve of each sensitivity class per day.

Nothing here may reach a store agent or a model as input: it is what models are scored on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedcrm.synthetic.calendar import FESTIVALS, SENSITIVITY_CLASSES, RetailCalendar
from fedcrm.synthetic.catalog import Catalog
from fedcrm.synthetic.personas import MAX_STAGES, PERSONAS, stage_weights

__all__ = ["GROUND_TRUTH_DIR", "write_ground_truth"]

GROUND_TRUTH_DIR = "_ground_truth"

_README = """# Ground truth (evaluation only)

Hidden parameters of the synthetic chain next to this directory. Never give these files to
a store agent, a feature pipeline or a model: they are what results are scored against.
See fedcrm/synthetic/truth.py for the meaning of each file.
"""


def _personas_frame() -> pd.DataFrame:
    rows = [
        {
            "persona": p.name,
            "share": p.share,
            "visits_per_year": p.visits_per_year,
            "rate_shape": p.rate_shape,
            "lifetime_years": p.lifetime_years,
            "basket_lines": p.basket_lines,
            "price_level": p.price_level,
            "discount_prone": p.discount_prone,
            "female_share": p.female_share,
            "age_min": p.age_range[0],
            "age_max": p.age_range[1],
            "stages": len(p.stages) or 1,
        }
        for p in PERSONAS.values()
    ]
    frame = pd.DataFrame(rows)
    return frame.astype({"persona": "str"})


def _persona_categories(catalog: Catalog) -> pd.DataFrame:
    frames = []
    for persona in PERSONAS.values():
        weights = stage_weights(persona, catalog)
        weights = weights / weights.sum(axis=1, keepdims=True)
        used = len(persona.stages) or 1
        for stage in range(min(used, MAX_STAGES)):
            bound = persona.stages[stage].until if persona.stages else np.inf
            frames.append(
                pd.DataFrame(
                    {
                        "persona": persona.name,
                        "stage": stage,
                        "until_days_after_anchor": bound,
                        "category": catalog.names,
                        "weight": weights[stage],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True).astype({"persona": "str", "category": "str"})


def _calendar_frame(calendar: RetailCalendar) -> pd.DataFrame:
    names = np.array([f.name for f in FESTIVALS] + [""], dtype=object)
    frame = pd.DataFrame(
        {
            "date": calendar.days.astype("datetime64[ns]"),
            "event": pd.Series(names[calendar.event], dtype="str").replace("", None),
            "promo_depth": calendar.depth,
            "base_demand": calendar.base,
        }
    )
    for cls in SENSITIVITY_CLASSES:
        frame[f"demand_{cls}"] = calendar.intensity(cls)
    return frame


def write_ground_truth(
    root: Path, customers: Sequence[pd.DataFrame], catalog: Catalog, calendar: RetailCalendar
) -> None:
    """Write the ground-truth directory at ``root`` (created)."""
    root.mkdir(parents=True)
    pd.concat(customers, ignore_index=True).to_parquet(root / "customers.parquet", index=False)
    catalog.categories_frame().to_parquet(root / "categories.parquet", index=False)
    catalog.products_frame().to_parquet(root / "products.parquet", index=False)
    catalog.co_purchase_frame().to_parquet(root / "co_purchase.parquet", index=False)
    _persona_categories(catalog).to_parquet(root / "persona_categories.parquet", index=False)
    _personas_frame().to_parquet(root / "personas.parquet", index=False)
    _calendar_frame(calendar).to_parquet(root / "calendar.parquet", index=False)
    (root / "README.md").write_text(_README, encoding="utf-8")
