"""reviewscore: asynchronous batch scoring of movie-review sentiment.

The Python client: `from reviewscore import Client`.
"""

from reviewscore.client import ApiError, Client

__all__ = ["ApiError", "Client"]
__version__ = "0.1.0"
