"""The synthetic retail chain: fedcrm's embedded default data.

:func:`generate_chain` writes one store directory per store (the data contract's tables)
and the hidden ground truth apart, in ``_ground_truth/``. Modules, one concept each:

- :mod:`.chain` — parameters, orchestration, output layout (the public entry point);
- :mod:`.formats` — store formats and the plan of a chain's stores;
- :mod:`.population` — people and their store memberships (multi-store shoppers);
- :mod:`.identity`, :mod:`.geography` — Chinese names, mobiles, resident IDs, addresses;
- :mod:`.personas`, :mod:`.catalog`, :mod:`.calendar` — who buys what, products and
  co-purchases, the retail calendar and its demand curves;
- :mod:`.lifecycle`, :mod:`.purchases`, :mod:`.interactions`, :mod:`.consent` — one
  store's buy-till-you-die lives, baskets, interactions and consent ledger;
- :mod:`.store_builder` — a store's tables; :mod:`.truth` — the ground truth;
- :mod:`.sampling` — seeded streams and vectorised sampling primitives.
"""

from fedcrm.synthetic.chain import ChainParams, ChainSummary, StoreSummary, generate_chain

__all__ = ["ChainParams", "ChainSummary", "StoreSummary", "generate_chain"]
