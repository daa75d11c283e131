"""The demo's output: its table, and its plot of requests per second at the
server (``--plot``, needs the ``plot`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._demo import DemoConfig, Result

__all__ = ["format_table", "plot"]


def format_table(results: Sequence[Result], config: DemoConfig) -> str:
    header = (
        "caller",
        "ok",
        "failed",
        "payments",
        "duplicates",
        "missing",
        "requests",
        "ampl.",
        "p50 ms",
        "p99 ms",
        "killed",
    )
    rows = [header]
    for r in results:
        rows.append(
            (
                r.caller,
                str(r.succeeded),
                str(r.failed),
                str(r.payments),
                str(r.duplicates),
                str(r.missing),
                str(r.requests),
                f"{r.amplification:.2f}x",
                f"{r.percentile(0.5) * 1000:.0f}",
                f"{r.percentile(0.99) * 1000:.0f}",
                "-" if r.relay_kills is None else f"{r.relay_kills}x",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    f = config.faults
    notes = [
        f"{config.calls} payments per caller at {config.rate:g}/s, at most "
        f"{config.concurrency} at a time; seed {config.seed}; store {config.store}",
        f"faults: response lost after processing {f.drop_after:.0%}, "
        f"dropped before {f.drop_before:.0%}, reset {f.reset:.0%}, "
        f"503 {f.unavailable:.0%}, stall {f.stall:.0%}; "
        f"outage {config.outage:g} s",
        "ok: the caller saw success.  failed: the caller saw an error (outcome "
        "lost or unknown).",
        "payments: created on the server.  duplicates: payments made twice or "
        "more for one order.",
        "missing: orders with no payment.  requests: what the server received; "
        "ampl.: requests per order.",
        "reliable_client + outbox: ok is delivered, failed is dead or undelivered, "
        "latency runs from enqueue to delivery;",
        "killed: how many times its relay process was SIGKILLed mid-run (and "
        "restarted).",
    ]
    return "\n".join([*lines, "", *notes])


def plot(results: Sequence[Result], config: DemoConfig, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise SystemExit(
            "--plot needs matplotlib: pip install 'reliable-client[plot]'"
        ) from exc
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for r in results:
        if not r.request_times:
            continue
        end = max(r.request_times)
        bins = max(1, int(end / 0.1) + 1)
        counts = [0] * bins
        for t in r.request_times:
            counts[min(bins - 1, int(t / 0.1))] += 1
        axes.plot(
            [i * 0.1 for i in range(bins)], [c * 10 for c in counts], label=r.caller
        )
    starts = [r.outage_start for r in results if r.outage_start is not None]
    if starts:
        axes.axvspan(
            min(starts),
            max(starts) + config.outage,
            color="grey",
            alpha=0.2,
            label="outage",
        )
    axes.set_xlabel("seconds since the caller started")
    axes.set_ylabel("requests per second at the server")
    axes.set_title(
        f"{config.calls} payments, {config.concurrency} concurrent, "
        f"{config.outage:g} s outage"
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
