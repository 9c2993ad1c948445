"""The central coordinator (Flower ServerApp): aggregation, evaluation, model versions.

Built by the federated-training issue; the store-side data pipeline comes first.
"""
