"""Ack latency of ``/build backend codeBranch=develop commit=abc1234`` against a bare Bolt app.

    python -m bench.ack_latency            # 8 interleaved round pairs of 500 requests
    python -m bench.ack_latency --quick    # 3 pairs of 200, for a smoke run

What is measured: the time from opening a connection to the last byte of the
answer, for signed slash-command requests sent by 50 concurrent senders (each
sends its next request as soon as the previous one is answered). "Ours" is the
bot's HTTP endpoint built as ``python -m bot`` builds it (``Runtime``, waitress,
production defaults: 8 workers, 16 waitress threads, SQLite in WAL mode, INFO
logging to a file); the command parses, passes the checks (the user is allowed
by ``users``, so no user-group lookup is needed) and queues the confirmation.
"Baseline" is a ``slack_bolt.App`` with one ``/build`` listener that calls
``ack()``, served by waitress with ``SlackRequestHandler`` and the same thread
count and options. Rounds alternate ours, baseline, ours, baseline...; before
each round the previous server has finished its work after the acks (the bot's
worker pool is idle), so neither is charged for the other.

Processes: each server runs in its own child process; the load generator is a
third process (one asyncio loop, one fresh connection per request), so its CPU
is not the server's; the Slack and CodeArts stand-ins run in this parent
process and receive the confirmations. All share the machine's cores.

Target: no failed request, and our p99 within 1.2x of the baseline's.
Figures go to stdout and bench/results/ack_latency.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench._common import (
    USERS,
    Child,
    LoadGen,
    bot_values,
    command_body,
    config_text,
    median,
    pct,
    pin_cores,
    quiet_logging,
    serve_baseline,
    serve_ours,
    table,
    widen_backlog,
    write_results,
)
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack

TEXT = "backend codeBranch=develop commit=abc1234"
TARGET_RATIO = 1.2


def bodies(slack: FakeSlack, concurrency: int, per_worker: int) -> list[list[bytes]]:
    """One list per sender: its own user (allowed by ``users``) and response_url."""
    out = []
    for w in range(concurrency):
        url = slack.response_url()
        user = USERS[w % len(USERS)]
        out.append([command_body(TEXT, user=user, response_url=url)
                    for _ in range(per_worker)])
    return out


def one_round(name: str, server: Child, load: LoadGen, batch: list[list[bytes]]) -> dict[str, Any]:
    """Send the batch; wait until the server's work after the acks is done; summarise."""
    cpu0 = server.ask("cpu")
    rows = load.closed_loop(server.hello[0], batch)
    settled = server.ask("idle")
    cpu = server.ask("cpu") - cpu0
    ms = [(t1 - t0) * 1000 for t0, t1, status in rows if status == 200]
    failed = sum(1 for *_t, status in rows if status != 200)
    return {"server": name, "requests": len(rows), "failed": failed, "settled": settled,
            "p50_ms": pct(ms, 50), "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99),
            "max_ms": max(ms, default=float("nan")),
            "cpu_ms_per_request": cpu * 1000 / max(1, len(rows))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 pairs of 200 requests")
    ap.add_argument("--pairs", type=int, help="round pairs (ours, baseline)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--per-worker", type=int, help="requests each sender sends per round")
    ap.add_argument("--worker-threads", type=int,
                    help="WORKER_THREADS for the bot (default: the setting's default, 8)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--candidate", help="folder with a patched copy of the bot package: "
                    "measured as a third server, interleaved with the other two")
    args = ap.parse_args()
    pairs = args.pairs or (3 if args.quick else 8)
    per_worker = args.per_worker or (4 if args.quick else 10)
    quiet_logging()
    pinning = pin_cores(not args.no_pin)

    tmp = Path(tempfile.mkdtemp(prefix="bench-ack-"))
    (tmp / "buildbot.toml").write_text(config_text())
    with FakeSlack() as slack, FakeCodeArts(build_duration=3600) as codearts:
        codearts.add_job("f9d6c8466d614a9788e9a0acf6c15f46")
        slack.usergroups["SDEVS"] = []
        widen_backlog(slack, codearts)
        values = bot_values(slack_api_url=slack.api_url, codearts_url=codearts.url,
                            db_url=f"sqlite:///{tmp / 'buildbot.db'}", config=tmp / "buildbot.toml")
        if args.worker_threads:
            values["worker_threads"] = args.worker_threads
        ours = Child(serve_ours, values, str(tmp / "ours.log"), False, server=True)
        threads = ours.hello[1]
        base = Child(serve_baseline, slack.api_url, threads, str(tmp / "baseline.log"),
                     server=True)
        servers = {"ours": ours, "baseline": base}
        if args.candidate:
            values_c = {**values, "database_url": f"sqlite:///{tmp / 'patched.db'}"}
            servers["patched"] = Child(serve_ours, values_c, str(tmp / "patched.log"), False,
                                       args.candidate, server=True)
        load = LoadGen()
        try:
            for name, server in servers.items():  # warm-up, not counted
                one_round(name, server, load, bodies(slack, args.concurrency, 2))
            before = len(slack.responses())
            rounds: list[dict[str, Any]] = []
            for i in range(pairs):
                for name, server in servers.items():
                    r = one_round(name, server, load, bodies(slack, args.concurrency, per_worker))
                    rounds.append({"pair": i + 1, **r})
                    print(f"pair {i + 1} {name:8s} p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms  failed {r['failed']}", flush=True)
            confirmations = len(slack.responses()) - before
            expected = sum(r["requests"] for r in rounds if r["server"] != "baseline")
        finally:
            load.close()
            for server in servers.values():
                server.close()
    report(rounds, threads=threads, concurrency=args.concurrency, per_worker=per_worker,
           confirmations=confirmations, confirmations_expected=expected, log=str(tmp / "ours.log"),
           candidate=args.candidate, pinning=pinning, quick=args.quick)
    return 0


def report(rounds: list[dict[str, Any]], **meta: Any) -> None:
    ours = [r for r in rounds if r["server"] == "ours"]
    base = [r for r in rounds if r["server"] == "baseline"]
    ratios = {k: [o[k] / b[k] for o, b in zip(ours, base, strict=True)]
              for k in ("p50_ms", "p99_ms", "cpu_ms_per_request")}
    print()
    print(table(["pair", "server", "requests", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms",
                 "server CPU ms/req"],
                [[r["pair"], r["server"], r["requests"], r["failed"], r["p50_ms"], r["p90_ms"],
                  r["p99_ms"], r["max_ms"], r["cpu_ms_per_request"]] for r in rounds]))
    summary = {
        "ours_p50_ms": median([r["p50_ms"] for r in ours]),
        "ours_p99_ms": median([r["p99_ms"] for r in ours]),
        "baseline_p50_ms": median([r["p50_ms"] for r in base]),
        "baseline_p99_ms": median([r["p99_ms"] for r in base]),
        "ratio_p50": median(ratios["p50_ms"]),
        "ratio_p99": median(ratios["p99_ms"]),
        "ratio_cpu_per_request": median(ratios["cpu_ms_per_request"]),
        "failed_ours": sum(r["failed"] for r in ours),
        "failed_baseline": sum(r["failed"] for r in base),
        "confirmations_expected": meta["confirmations_expected"],
        "confirmations_delivered": meta["confirmations"],
    }
    summary["met"] = (summary["failed_ours"] == 0 and summary["failed_baseline"] == 0
                      and summary["ratio_p99"] <= TARGET_RATIO)
    print()
    print(meta["pinning"])
    print(f"medians of per-round figures ({len(ours)} rounds each, {meta['concurrency']} "
          f"concurrent senders, {meta['threads']} waitress threads):")
    print(table(["", "p50 ms", "p99 ms", "failed"],
                [["ours", summary["ours_p50_ms"], summary["ours_p99_ms"], summary["failed_ours"]],
                 ["baseline", summary["baseline_p50_ms"], summary["baseline_p99_ms"],
                  summary["failed_baseline"]]]))
    print(f"median ratio ours/baseline: p50 {summary['ratio_p50']:.2f}x, "
          f"p99 {summary['ratio_p99']:.2f}x (target <= {TARGET_RATIO}x), "
          f"server CPU per request {summary['ratio_cpu_per_request']:.2f}x")
    cand = [r for r in rounds if r["server"] == "patched"]
    if cand:
        for k in ("p50_ms", "p99_ms", "cpu_ms_per_request"):
            summary[f"patched_{k}"] = median([r[k] for r in cand])
            summary[f"patched_ratio_{k}"] = median(
                [c[k] / b[k] for c, b in zip(cand, base, strict=True)])
        print(f"patched ({meta['candidate']}): p50 {summary['patched_p50_ms']:.2f} ms, "
              f"p99 {summary['patched_p99_ms']:.2f} ms; median ratio to baseline: "
              f"p50 {summary['patched_ratio_p50_ms']:.2f}x, p99 "
              f"{summary['patched_ratio_p99_ms']:.2f}x, CPU per request "
              f"{summary['patched_ratio_cpu_ms_per_request']:.2f}x")
    print(f"confirmations delivered {summary['confirmations_delivered']}"
          f"/{summary['confirmations_expected']}; target met: {summary['met']}")
    name = "ack_latency" + ("-patched" if cand else "") + ("-quick" if meta["quick"] else "")
    path = write_results(name, {"target": {"failed": 0, "p99_ratio_max": TARGET_RATIO},
                                         "summary": summary, "rounds": rounds, **meta})
    print(f"written {path}")


if __name__ == "__main__":
    raise SystemExit(main())
