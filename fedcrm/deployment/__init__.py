"""Multi-site deployment: keys, certificates and configuration for SuperLink and SuperNodes."""
