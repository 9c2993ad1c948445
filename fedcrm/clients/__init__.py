"""The store agent (Flower ClientApp): boundary, local DP training, local scoring.

Built by the federated-training issue; the store-side data pipeline comes first.
"""
