"""Shared fixtures: a tiny, valid store written as real files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from fedcrm.data.store import StoreData, TableFormat, write_store


def tiny_store_data() -> StoreData:
    """Three customers, a handful of purchases and a consent ledger; all values valid."""
    customers = pd.DataFrame(
        {
            "customer_id": ["0001", "0002", "0003"],
            "name": ["赵一", "钱二", "孙三"],
            "mobile": ["13800000001", "13800000002", "13800000003"],
            "email": ["a@example.com", "b@example.com", None],
            "national_id": ["11010119900101002X", "110101198505050015", None],
            "birth_date": pd.to_datetime(["1990-01-01", "1985-05-05", None]).astype(
                "datetime64[ns]"
            ),
            "gender": ["F", "M", None],
            "address": ["北京市东城区一路1号", "北京市东城区二路2号", None],
            "city": ["北京", "北京", "上海"],
            "postcode": ["100010", "100010", "200001"],
            "member_tier": ["gold", "regular", "regular"],
            "joined_at": pd.to_datetime(["2024-01-02", "2024-02-03", "2024-03-04"]).astype(
                "datetime64[ns]"
            ),
        }
    )
    transactions = pd.DataFrame(
        {
            "transaction_id": ["t1", "t2", "t3", "t4", "t5"],
            "customer_id": ["0001", "0001", "0002", "0003", "0003"],
            "timestamp": pd.to_datetime(
                [
                    "2024-02-01 10:00",
                    "2024-04-01 11:30",
                    "2024-03-01 09:00",
                    "2024-03-05 18:00",
                    "2024-05-01 12:00",
                ]
            ).astype("datetime64[ns]"),
            "amount": [12.5, 30.0, 99.9, 5.0, 18.0],
            "quantity": [1, 2, 1, 1, 3],
            "category": ["food/snacks", "baby/diapers", "beauty/skincare", "food/snacks", None],
            "product_id": ["p1", "p2", "p3", "p1", "p4"],
            "channel": ["pos", "app", "pos", "mini_program", "pos"],
            "store_id": ["s1"] * 5,
            "discount": [0.0, 5.0, 0.0, 0.0, None],
        }
    )
    interactions = pd.DataFrame(
        {
            "customer_id": ["0001", "0002"],
            "timestamp": pd.to_datetime(["2024-02-02", "2024-03-02"]).astype("datetime64[ns]"),
            "kind": ["review", "complaint"],
            "category": ["food/snacks", None],
            "score": [4.0, None],
        }
    )
    consents = pd.DataFrame(
        {
            "customer_id": ["0001", "0001", "0002", "0003"],
            "purpose": ["analytics", "model_training", "analytics", "marketing"],
            "granted": [True, True, True, False],
            "timestamp": pd.to_datetime(
                ["2024-01-02", "2024-01-02", "2024-02-03", "2024-03-04"]
            ).astype("datetime64[ns]"),
            "source": ["pos_signup"] * 4,
            "policy_version": ["2024.1"] * 4,
        }
    )
    return StoreData("s1", customers, transactions, consents, interactions)


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., Path]:
    """Write the tiny store (optionally modified) and return its directory."""

    def _make(
        name: str = "s1",
        fmt: TableFormat = "csv",
        data: StoreData | None = None,
    ) -> Path:
        root = tmp_path / name
        write_store(data or tiny_store_data(), root, fmt=fmt)
        return root

    return _make
