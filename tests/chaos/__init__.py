"""A chaos soak on the multi-host suite's hosts (tests/multihost/harness.py): a workload runs
while a nemesis applies faults on a schedule drawn from a seed, every request and answer is
written to a history, and a checker reads the history and the database afterwards.

`make chaos SEED=n MINUTES=m` (or `python -m tests.chaos --seed n --minutes m`) runs it; a short
run is part of `make test` (tests/chaos/test_chaos.py, its seed printed)."""
