"""The run's tables, printed with rich: the rows, the singles load runs (with every side's CPU
share, so a reader sees which side was the limit), and the targets."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bench.phases import PHASES
from bench.results import BestOf, JobRun, LoadRun, Results, RssSummary
from bench.rows.scale import ONE


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def phase_text(run: JobRun) -> str:
    p = run.phases
    if p is None:
        return "no phase records"
    share = p.phase_share
    parts = " ".join(f"{phase} {share[phase]:.0%}" for phase in PHASES)
    return (
        f"worker busy {p.busy_fraction:.0%}: {parts}; model in worker "
        f"{p.model_reviews_per_s:,.0f}/s"
    )


def passes_text(best: BestOf) -> str:
    rates = " ".join(f"{p.reviews_per_s:.0f}" for p in best.passes)
    return f"passes {rates}; ingest {best.best.ingest_rows_per_s:,.0f} rows/s"


def rss_text(rss: RssSummary | None) -> str:
    if rss is None:
        return "-"
    return f"{rss.start_mb:,.0f}/{rss.max_mb:,.0f}/{rss.end_mb:,.0f} MB ({rss.growth_pct:+.1f}%)"


def rows_table(r: Results) -> Table:
    t = Table(title="reviewscore benchmark: one run", title_justify="left")
    t.add_column("row")
    t.add_column("reviews/s", justify="right")
    t.add_column("details", overflow="fold")
    rows = r.rows
    if limit := rows.limit:
        for m in limit.models:
            name = f"1 limit: {m.name}" + (" (baseline)" if m.baseline else "")
            if m.name == limit.default_model and not m.baseline:
                name += " (default)"
                if limit.recheck_reviews_per_s:
                    name += f" [recheck at end {limit.recheck_reviews_per_s:,.0f}]"
            by_batch = " ".join(f"{b}:{v:.0f}" for b, v in m.reviews_per_s_by_batch.items())
            t.add_row(
                name,
                fmt(m.reviews_per_s, 0),
                f"best batch {m.best_batch}; by batch {by_batch}; Scorer.score@"
                f"{r.meta['knobs']['score_batch_size']}: {m.scorer_reviews_per_s:,.0f}; "
                f"batch-1 p50 {m.batch1.p50_ms:.2f} ms",
            )
        if a := limit.agreement:
            t.add_row(
                "1 limit: labels vs baseline",
                "",
                f"{a.same_label_fraction:.4%} identical on {a.reviews:,} test reviews; accuracy "
                f"{a.accuracy:.4%} vs {a.baseline_accuracy:.4%}",
            )
    if seed := rows.seed:
        t.add_row("2 seed: predict per review", fmt(seed.reviews_per_s), f"{seed.calls} reviews")
    if naive := rows.naive:
        t.add_row("3 naive: task per review", fmt(naive.reviews_per_s), f"{naive.calls} tasks")
    for name, bulk, how in (
        ("4 bulk: CSV -> SQL", rows.bulk, ""),
        (
            "4 bulk, the API parsing",
            rows.bulk_api_parse,
            "REVIEWSCORE_INGEST_PARSE=api, its own stack; ",
        ),
    ):
        if bulk is not None:
            b = bulk.best
            t.add_row(
                name,
                fmt(bulk.reviews_per_s, 0),
                f"{how}{b.rows:,} rows in {b.seconds:.1f}s (upload {b.upload_seconds:.1f}s); "
                f"{passes_text(bulk)}; {phase_text(b)}",
            )
    for s in rows.singles:
        t.add_row(
            f"5 singles: {s.connections} connection(s)",
            fmt(s.reviews_per_s, 0),
            f"p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms, {s.errors} errors ({s.generator})",
        )
    if big := rows.big:
        run = big.run
        t.add_row(
            "6 big dump",
            fmt(run.reviews_per_s, 0),
            f"{run.rows:,} rows ({big.csv_mb:,.0f} MB) in {run.seconds:.0f}s; ingest "
            f"{run.ingest_rows_per_s:,.0f} rows/s ({run.upload_seconds:.0f}s); computed "
            f"{fmt(run.computed)}, from cache {fmt(run.rows - (run.computed or 0))}; API RSS max "
            f"{fmt(big.api_rss.max_mb if big.api_rss else None, 0)} MB; worker RSS "
            f"start/max/end {rss_text(big.worker_rss)}",
        )
    if d := rows.dedup:
        for label, x in (("distinct", d.distinct), ("repeated 10x", d.repeated_10x)):
            t.add_row(
                f"6 dedup: {label}",
                fmt(x.reviews_per_s, 0),
                f"{x.rows:,} rows, computed {fmt(x.computed)}"
                + (f"; {d.speedup:.1f}x of distinct" if x is d.repeated_10x else ""),
            )
    if ONE in rows.scale:
        one = rows.scale[ONE].reviews_per_s
        for label, variant in rows.scale.items():
            t.add_row(
                f"7 scale: {label}",
                fmt(variant.reviews_per_s, 0),
                f"{variant.reviews_per_s / one:.2f}x of 1 process; {passes_text(variant)}; "
                f"{phase_text(variant.best)}",
            )
    f = rows.fairness
    if f.alone:
        t.add_row(
            "8 fairness: small job alone", fmt(f.alone.reviews_per_s, 0), f"{f.alone.seconds:.2f}s"
        )
    if f.under_dump:
        t.add_row(
            "8 fairness: same under dump",
            fmt(f.under_dump.reviews_per_s, 0),
            f"{f.under_dump.seconds:.2f}s; dump still running after the checks: "
            f"{f.dump_still_running}",
        )
    if busy := f.singles_under_dump:
        t.add_row(
            f"8 fairness: singles under dump ({busy.connections} conn.)",
            fmt(busy.reviews_per_s, 0),
            f"p50 {busy.p50_ms:.1f} ms, p99 {busy.p99_ms:.1f} ms, {busy.errors} errors "
            f"({busy.generator})",
        )
    if (node := rows.singles_node) and node.idle and node.under_dump:
        for label, on_node in (
            ("idle", node.idle),
            (f"{node.dump_rows:,}-row dump", node.under_dump),
        ):
            t.add_row(
                f"8b singles worker node: {label} ({on_node.connections} conn.)",
                fmt(on_node.reviews_per_s, 0),
                f"p50 {on_node.p50_ms:.1f} ms, p99 {on_node.p99_ms:.1f} ms, "
                f"{on_node.errors} errors ({on_node.generator})",
            )
    if (resumed := rows.resume) is not None:
        t.add_row(
            f"10 resume: CLI SIGKILLed {resumed.kills}x",
            fmt(resumed.rows / resumed.seconds, 0),
            f"{resumed.rows:,} rows ({resumed.file_bytes / 1e6:,.0f} MB) in {resumed.seconds:.0f}s "
            f"over {resumed.kills + 1} runs; sent {resumed.sent_ratio:.2f}x the file; every id "
            f"once, in order: {resumed.ids_once_in_order}; seed {resumed.seed} (RESUME_SEED)",
        )
    for label, variant in rows.knobs.items():
        t.add_row(
            f"knobs: {label}",
            fmt(variant.reviews_per_s, 0),
            f"{passes_text(variant)}; {phase_text(variant.best)}",
        )
    return t


def singles_table(runs: list[tuple[str, LoadRun]]) -> Table:
    t = Table(
        title="singles: POST /v1/score, one real review per request; CPU in cores (1.00 = one "
        "core busy) during the run",
        title_justify="left",
    )
    t.add_column("while")
    for name in ("connections", "reviews/s", "p50 ms", "p99 ms", "errors"):
        t.add_column(name, justify="right")
    for name in ("client CPU", "API CPU", "worker CPU", "Redis CPU", "machine busy"):
        t.add_column(name, justify="right")
    t.add_column("generator")
    for label, s in runs:
        c = s.cpu
        t.add_row(
            label,
            str(s.connections),
            fmt(s.reviews_per_s, 0),
            fmt(s.p50_ms, 2),
            fmt(s.p99_ms, 1),
            str(s.errors),
            f"{c.client:.2f}",
            f"{c.api:.2f}",
            f"{c.worker:.2f}",
            f"{c.redis:.2f}",
            f"{c.machine:.2f} of {c.cores}",
            s.generator,
        )
    return t


def targets_table(r: Results) -> Table:
    t = Table(title="targets", title_justify="left")
    t.add_column("target")
    t.add_column("value", justify="right")
    t.add_column("wanted")
    t.add_column("result")
    for target in r.targets:
        result = {True: "met", False: "NOT MET", None: "not measured"}[target.met]
        t.add_row(target.name, fmt(target.value, 2), f"{target.op} {target.wanted:g}", result)
    return t


def render(r: Results) -> str:
    """Prints the tables and returns the same text (kept in the results JSON)."""
    console = Console(record=True, width=170)
    console.print(rows_table(r))
    singles = [("idle", run) for run in r.rows.singles]
    if busy := r.rows.fairness.singles_under_dump:
        singles.append(("big dump", busy))
    if (node := r.rows.singles_node) and node.idle and node.under_dump:
        singles += [("singles node, idle", node.idle), ("singles node, dump", node.under_dump)]
    if singles:
        console.print(singles_table(singles))
    console.print(targets_table(r))
    load = r.meta["machine"]
    console.print(
        f"load average at start {load['load_average_at_start']}, at end "
        f"{r.meta.get('load_average_at_end')}; {load['cores']} cores"
    )
    return console.export_text()
