"""Score reviews right away, without a job (`POST /v1/score`): run by tests/test_docs.py.

Usage: python score_reviews.py [API_URL]   (default: REVIEWSCORE_API_URL, else localhost)
"""

import sys

from reviewscore import Client

client = Client(sys.argv[1] if len(sys.argv) > 1 else None)
answer = client.score(["I love this movie! It is amazing.", "Bad movie."])
for result in answer["results"]:  # in the order sent
    print(result["label"], round(result["p_positive"], 3))
print("model:", answer["model_version"])
