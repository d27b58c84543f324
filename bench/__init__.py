"""`make bench`: the Django + Temporal path measured side by side with a raw-SDK baseline in the same run.

Run with `.venv/bin/python -m bench` (or `make bench`); see docs/benchmarks.md for the knobs and the results.
"""
