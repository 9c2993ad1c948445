"""Federated analytics: DP queries answered by stores, summed under secure aggregation."""
