"""reviewscore: asynchronous batch scoring of movie-review sentiment."""

__version__ = "0.1.0"
