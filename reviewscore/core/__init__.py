"""The core at the bottom: settings, database, schema, job state, ingest, the Celery app and
the model registry. It imports nothing from the shell, the API, the worker or training."""
