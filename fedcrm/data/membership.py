"""Vectorised membership for text columns.

pandas' ``isin`` on ``str`` columns loops in Python (seconds at a million rows); pyarrow's
``is_in`` does the same test in C.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["text_isin"]


def text_isin(
    values: pd.Series | pd.Index, allowed: Iterable[str] | pd.Index | np.ndarray
) -> np.ndarray:
    """Boolean mask: which ``values`` are in ``allowed`` (missing values are not)."""
    if not isinstance(allowed, pd.Index | np.ndarray):
        allowed = list(allowed)
    hay = pa.array(pd.Series(values).astype("str"), type=pa.string())
    needles = pa.array(pd.Index(allowed).astype("str"), type=pa.string())
    found = pc.fill_null(pc.is_in(hay, value_set=needles), False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)
