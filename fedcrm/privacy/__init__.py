"""The store's privacy boundary: consent filtering and de-identification (DP follows)."""
