"""Score a small dump with the Python client: the tutorial's example, run by tests/test_docs.py.

Usage: python score_first_dump.py [API_URL]   (default: REVIEWSCORE_API_URL, else localhost)
"""

import csv
import sys
import tempfile
from pathlib import Path

from reviewscore import Client

client = Client(sys.argv[1] if len(sys.argv) > 1 else None)

# A dump: an id column and a text column, as most exports have.
dump = Path(tempfile.mkdtemp()) / "reviews.csv"
with dump.open("w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["id", "text"])
    for n in range(300):
        text = "A wonderful, moving film." if n % 2 else "Dull and far too long."
        writer.writerow([f"r-{n:03}", text])

job = client.submit(dump, id_column="id")  # uploads the file; the job is queued at once
job = client.wait(job["id"])  # polls until the server says the job is finished
print(job["status"], job["scored"], "scored,", job["failed"], "failed")

rows = client.results(job["id"])  # input order, ids exactly as sent
print(rows[0]["id"], rows[0]["label"], round(rows[0]["p_positive"], 3))
print("share positive:", job["summary"]["share_positive"])
