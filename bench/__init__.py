"""`make bench`: reviewscore measured side by side in one run, one module per measured row
(bench/rows/), typed results (bench/results.py), tables printed with rich (bench/report.py)."""
