"""The measurements, one module per phase; each runs both sides on a bench.load.Load and records into its Results."""
