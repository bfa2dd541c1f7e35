"""The bridge's benchmarks: `make bench` / `make bench-quick`, or `python -m bench`."""
