"""Analysis: DuckDB views over the store, estimators, figures and the evidence report."""
