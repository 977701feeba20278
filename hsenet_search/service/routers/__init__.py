"""The endpoints, grouped by what they serve."""
