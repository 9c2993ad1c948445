"""fedcrm: privacy-preserving federated analytics for retail CRM.

Architecture, by subpackage:

- :mod:`fedcrm.data` — the store data contract, validation, loading and import;
- :mod:`fedcrm.synthetic` — the embedded synthetic retail chain (default data);
- :mod:`fedcrm.privacy` — the store boundary: consent filtering, de-identification, DP;
- :mod:`fedcrm.models` — features, labels, churn and preference models;
- :mod:`fedcrm.clients` — the store agent (Flower ClientApp);
- :mod:`fedcrm.server` — the coordinator (Flower ServerApp);
- :mod:`fedcrm.cli` — the ``fedcrm`` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
