"""The targets the README's Performance table holds, computed from one run's rows."""

from __future__ import annotations

from bench.results import Rows, Target
from bench.rows.scale import ONE


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def targets(rows: Rows, busy_connections: int) -> list[Target]:
    bulk = rows.bulk.reviews_per_s if rows.bulk else None
    limit = rows.limit
    one = rows.singles_at(1)
    many = rows.singles_at(64)
    idle = rows.singles_at(busy_connections)
    busy = rows.fairness.singles_under_dump
    big = rows.big
    scale_one = rows.scale[ONE].reviews_per_s if ONE in rows.scale else None
    # The better way of running two worker processes.
    scale_two = max((v.reviews_per_s for k, v in rows.scale.items() if k != ONE), default=None)
    out = [
        Target("bulk / limit", ratio(bulk, limit.reviews_per_s if limit else None), ">=", 0.90),
        Target(
            "bulk / seed", ratio(bulk, rows.seed.reviews_per_s if rows.seed else None), ">=", 100
        ),
        Target(
            "bulk / naive queue",
            ratio(bulk, rows.naive.reviews_per_s if rows.naive else None),
            ">=",
            10,
        ),
        Target("singles p50 at 1 connection (ms)", one.p50_ms if one else None, "<=", 5),
        Target(
            "singles at 64 connections (reviews/s)",
            many.reviews_per_s if many else None,
            ">=",
            3000,
        ),
        Target("singles p99 at 64 connections (ms)", many.p99_ms if many else None, "<=", 50),
        Target(
            "big dump API peak RSS (MB)",
            big.api_rss.max_mb if big and big.api_rss else None,
            "<",
            300,
        ),
        Target(
            "big dump worker RSS growth (%)",
            big.worker_rss.growth_pct if big and big.worker_rss else None,
            "<=",
            10,
        ),
        Target(
            "ingest / scoring rate",
            ratio(big.run.ingest_rows_per_s if big else None, bulk),
            ">=",
            10,
        ),
        Target("2 workers / 1 worker", ratio(scale_two, scale_one), ">=", 1.8),
        Target(
            "small job under dump / alone",
            ratio(
                rows.fairness.under_dump.seconds if rows.fairness.under_dump else None,
                rows.fairness.alone.seconds if rows.fairness.alone else None,
            ),
            "<=",
            10,
        ),
        Target(
            f"singles p99 under dump / idle ({busy_connections} connections)",
            ratio(busy.p99_ms if busy else None, idle.p99_ms if idle else None),
            "<=",
            2,
        ),
    ]
    if (node := rows.singles_node) is not None:
        out.append(
            Target(
                f"with a singles worker: p99 under dump / idle ({busy_connections} connections)",
                ratio(
                    node.under_dump.p99_ms if node.under_dump else None,
                    node.idle.p99_ms if node.idle else None,
                ),
                "<=",
                2,
            )
        )
    if (resumed := rows.resume) is not None:
        out += [
            Target(
                f"resumed upload ({resumed.kills} SIGKILLs): bytes sent / file",
                resumed.sent_ratio if resumed.ids_once_in_order else None,
                "<",
                1.5,
                limited_by="" if resumed.ids_once_in_order else "ids lost, repeated or reordered",
            )
        ]
    if limit is not None and limit.agreement is not None:
        baseline = limit.model(limit.default_model, baseline=True)
        agreement = limit.agreement
        out += [
            Target(
                f"{limit.default_model} / its baseline graph (raw rate)",
                ratio(limit.default.reviews_per_s, baseline.reviews_per_s if baseline else None),
                ">=",
                2,
            ),
            Target(
                "labels identical to the baseline (%)",
                agreement.same_label_fraction * 100,
                ">=",
                99.9,
            ),
            Target(
                "accuracy change against the baseline (points)",
                abs(agreement.accuracy - agreement.baseline_accuracy) * 100,
                "<=",
                0.05,
            ),
        ]
    return out
