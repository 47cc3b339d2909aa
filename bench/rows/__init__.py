"""One module per measured row of `make bench`; each returns its typed result (bench/results.py)."""
