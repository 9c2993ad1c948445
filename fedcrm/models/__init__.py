"""Features, labels and (later) the churn and preference models."""
