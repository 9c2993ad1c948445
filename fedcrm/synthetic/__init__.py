"""The synthetic retail chain: fedcrm's embedded default data."""
