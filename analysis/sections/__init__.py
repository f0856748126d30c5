"""One report section per store table, found through the task registry (see analysis/report.py)."""
