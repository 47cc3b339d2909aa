"""Every Redis key the service itself writes, in one place (as arq's constants.py names its
own). Redis is shared by every API and worker process on every host: a key named in two places
would have two owners. Celery's own keys are Celery's: the queues (celery_app.BULK_QUEUE,
SINGLES_QUEUE and their priority lists), its result backend, and its control mailboxes."""

# + "<node>:<pid>": what a worker process reports for /readyz (celery_app.report_worker).
WORKER_PREFIX = "reviewscore:worker:"
# + "<API process id>": the answers of POST /v1/score's batches (core/replies.py).
REPLY_PREFIX = "reviewscore:replies:"
# + "<batch>": set with each POST /v1/score batch, its TTL the API's wait; a worker scores the
# batch only while it exists (core/replies.py: Redis's clock judges lateness, not the hosts').
AWAITED_PREFIX = "reviewscore:awaited:"

# /metrics' row counters (api/metrics.py): the running totals, each job's counted mark, the
# time before which every finished job is counted, jobs a DELETE counted (and the hash older
# versions kept for them), and the lock one scrape at a time holds while it counts.
METRICS_ROWS_TOTAL = "reviewscore:metrics:rows_total"
METRICS_ROWS_COUNTED = "reviewscore:metrics:rows_counted"
METRICS_ROWS_SETTLED = "reviewscore:metrics:rows_settled_until"
METRICS_ROWS_GONE = "reviewscore:metrics:rows_gone_at"
METRICS_ROWS_GONE_BEFORE = "reviewscore:metrics:rows_gone"
METRICS_ROWS_LOCK = "reviewscore:metrics:rows_lock"
# Rare events the alerts count (core/event_counts.py).
METRICS_EVENTS = "reviewscore:metrics:events"
