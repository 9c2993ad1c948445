"""Store data: the contract, validation, loading, writing and import of real files."""
