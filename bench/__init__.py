"""`make bench` (bench.run), `make bench-servers` (bench.servers), `python -m bench.profile`: see docs/benchmarks.md."""
