"""Tamper-evident audit trail: hash-chained, signed event logs and their verification."""
