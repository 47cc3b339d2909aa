"""Celery worker: loads the Keras model once per process and scores chunks and single reviews."""
