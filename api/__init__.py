"""The HTTP API: a thin FastAPI layer over reviewscore; it enqueues tasks by name, never loads TensorFlow."""
