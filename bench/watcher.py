"""The watcher following 100, 1,000 and 5,000 running builds at once, in one process.

    python -m bench.watcher                 # 15 s poll, 3 measured poll periods per size
    python -m bench.watcher --quick         # 2 s poll: a smoke run (figures not comparable)
    python -m bench.watcher --sizes 1000 --periods 4

For each size N: a CodeArts stand-in in its own process gets N builds of one
job that never finish during the run; the store (SQLite, a fresh file) is
seeded directly with N watched builds (announced, each with a message ts) whose
first checks are spread evenly over one poll period, as builds started at
different times would be. Then the bot is built in its own process exactly as
``python -m bot`` builds it (``Runtime``: Slack client, CodeArts client, store,
Bolt app, worker pool; no HTTP server) and only its watcher is started. After
one poll period of warm-up, we measure over ``--periods`` poll periods:

* status requests per build per poll period (1.0 = every build polled once
  per period; counted at the stand-in);
* the gap between two polls of the same build (median and p99; the poll
  period when the watcher keeps up);
* CPU of the watcher process (user + system, from getrusage) as % of one core;
* peak memory: VmHWM of the watcher process (and VmRSS before it started
  watching, for the fixed part);
* live progress: ``chat.update`` calls per build in the window, and the most any
  one message got in any 10 s (goal: at most 1; 0 while nothing changes), and
  steps requests per build (the builds list five steps that do not move during
  the run, so after the first update only the elapsed minute changes the text).

Targets at 1,000 builds: under 150 MB and under 10% of one core; growth no
worse than linear. Figures go to stdout and bench/results/watcher.json.

    python -m bench.watcher --slow-share 0.1 --slow-seconds 10 --sizes 1000

runs the slow-partner case instead: a share of the builds belongs to a job whose
status calls are each held ``--slow-seconds`` by the stand-in, the rest to ten
fast jobs whose builds end at staggered moments during the run. It prints how
long after its end each fast build's result reached its thread (from the
stand-in's end time to the Slack stand-in receiving the reply; both processes
read CLOCK_MONOTONIC). Goal: at most two poll intervals plus one call.

    python -m bench.watcher --jobs 1000/20,5000/100
    python -m bench.watcher --latency

    git worktree add /tmp/bot-before 65d2291
    python -m bench.watcher --jobs 5000/100,1000/1 --bot-path /tmp/bot-before --repeat 3
    python -m bench.watcher --jobs 5000/100 --periods 2 --profile /tmp/watcher-profile

``--jobs N/J``: N running builds over J jobs (N/J each), seeded as above. It prints
CodeArts status reads per poll period (the jobs' history pages and per-build record
calls; goal: at most J, not N), CPU and memory, with the per-job history poll and, for
comparison, ``--per-build`` (each build's own record, as before). ``--latency``: builds
of twelve jobs ending at staggered moments, followed by the real watcher thread at the
production poll (15 s); it prints how long after its end each result reached its thread,
without the CodeArts webhook and with it (a call to ``POST /codearts/events`` at each
build's end, as CodeArts makes). With ``--bot-path``, ``--jobs`` runs the bot found there
("before") and this one ("now") one after the other for each size, ``--repeat`` passes,
and prints the medians side by side, with the watcher's CPU per build per poll (CPU
seconds over the window / builds / polls in it). ``--profile PREFIX`` writes each
watcher's cProfile (every thread, timed by its own CPU clock) to ``PREFIX-...txt``: the
profiler roughly doubles the CPU, so read its shares, not its totals.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench._common import (
    USERS,
    Child,
    bot_values,
    config_text,
    cpu_seconds,
    log_to_file,
    median,
    pct,
    pin_cores,
    proc_status_kib,
    quiet_logging,
    table,
    write_results,
)

TARGET_MB = 150.0
TARGET_CPU = 10.0
PROGRESS_STEPS = ("Checkout", "Compile", "Test", "Build image", "Push image")
STEPS_KEY = "steps requests"


def codearts_child(conn: Connection) -> None:
    """Child process: the CodeArts stand-in, seeded on request, counting status requests."""
    import httpx

    from bench._common import widen_backlog
    from tests.fakes.codearts import FakeCodeArts

    with FakeCodeArts(build_duration=10**7) as fake:
        widen_backlog(fake)
        conn.send(fake.url)
        while True:
            cmd = conn.recv()
            if cmd[0] == "seed":
                job = uuid.uuid4().hex
                fake.add_job(job, duration=10**7, steps=PROGRESS_STEPS)
                with httpx.Client(base_url=fake.url, headers={"X-Auth-Token": fake.token}) as c:
                    made = [c.post("/v3/jobs/build", json={"job_id": job}).json()
                            for _ in range(cmd[1])]
                fake.reset()
                conn.send((job, [(m["actual_build_number"], m["daily_build_number"])
                                 for m in made]))
            elif cmd[0] == "polls":
                _, t0, t1 = cmd
                times: dict[str, list[float]] = defaultdict(list)
                for r in fake.requests_to("/v4/jobs/"):
                    times[r.path].append(r.time)
                times[STEPS_KEY] = [r.time for r in fake.requests
                                    if r.path.endswith("/history-details")]
                fake.reset()
                conn.send({p: [t for t in ts if t0 <= t <= t1] for p, ts in times.items()})
            elif cmd[0] == "seed_mixed":
                _, n, share, slow_s = cmd[:4]
                durations = cmd[4]
                jobs: list[tuple[str, float, int]] = [(uuid.uuid4().hex, 10.0**7, int(n * share))]
                fast = n - jobs[0][2]
                jobs += [(uuid.uuid4().hex, d, fast // len(durations) + (
                    1 if k < fast % len(durations) else 0)) for k, d in enumerate(durations)]
                made_by_job = []
                for job, duration, count in jobs:
                    fake.add_job(job, duration=duration)
                    with httpx.Client(base_url=fake.url,
                                      headers={"X-Auth-Token": fake.token}) as c:
                        made = [c.post("/v3/jobs/build", json={"job_id": job}).json()
                                for _ in range(count)]
                    made_by_job.append((job, [(m["actual_build_number"], m["daily_build_number"])
                                              for m in made]))
                fake.hang(slow_s, count=10**9, path_prefix=f"/v4/jobs/{jobs[0][0]}/")
                conn.send(made_by_job)
            elif cmd[0] == "seed_jobs":  # n builds over j jobs, none ending during the run
                _, n, j = cmd
                made_by_job = []
                with httpx.Client(base_url=fake.url, headers={"X-Auth-Token": fake.token}) as c:
                    for k in range(j):
                        job = uuid.uuid4().hex
                        fake.add_job(job, duration=10**7, steps=PROGRESS_STEPS)
                        made = [c.post("/v3/jobs/build", json={"job_id": job}).json()
                                for _ in range(n // j + (1 if k < n % j else 0))]
                        made_by_job.append((job, [(m["actual_build_number"],
                                                   m["daily_build_number"]) for m in made]))
                fake.reset()
                conn.send(made_by_job)
            elif cmd[0] == "reads":  # status reads in [t0, t1], by kind
                _, t0, t1 = cmd
                seen = [r for r in fake.requests if t0 <= r.time < t1 and r.method == "GET"]
                history = [r for r in seen if r.path.endswith("/history")]
                conn.send({"history": len(history),
                           "history_jobs": len({r.path for r in history}),
                           "record": sum(1 for r in seen if r.path.endswith("/record-info")),
                           "steps": sum(1 for r in seen if r.path.endswith("/history-details"))})
                fake.reset()
            elif cmd[0] == "ends":
                conn.send({f"{b.job_id}/{b.number}": b.started + b.duration
                           for builds_ in fake._builds.values() for b in builds_})
            elif cmd[0] == "stop":
                return


def watcher_child(conn: Connection, values: dict[str, Any], log_path: str,
                  bot_path: str | None, history_polls: bool = True,
                  profile: str | None = None) -> None:
    """Child process: the bot's Runtime with only its watcher running (``profile``: a
    file for the CPU profile of all its threads, see ``profile_threads``)."""
    if bot_path:  # a patched copy of the bot package, to measure a proposed fix
        sys.path.insert(0, bot_path)
    log_to_file(log_path)
    dump = profile_threads() if profile else None
    from bot.config import load_config
    from bot.runtime import Runtime
    from bot.settings import load_settings

    settings = load_settings(**values)
    runtime = Runtime(settings, load_config(settings.buildbot_config), watch=False)
    if not history_polls:  # the comparison: each build's own record call, as before
        runtime.engine.following.history_polls = False
    rss_before = proc_status_kib("VmRSS")
    runtime.watcher.start()
    conn.send(rss_before)
    try:
        while conn.recv() != "stop":
            conn.send((time.monotonic(), cpu_seconds(), proc_status_kib("VmRSS"),
                       proc_status_kib("VmHWM")))
    finally:
        runtime.close()
        if dump is not None and profile:
            dump(profile)


def profile_threads() -> Callable[[str], None]:
    """Profile every thread started from now on by CPU time (cProfile with each thread's
    own CPU clock, so waiting costs nothing); the function returned writes the stats of
    the threads that have ended, sorted by cumulative time, to a file."""
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    run = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        prof = cProfile.Profile(time.thread_time)
        profiles.append(prof)
        prof.enable()
        try:
            run(self)
        finally:
            prof.disable()

    threading.Thread.run = profiled  # type: ignore[method-assign]

    def dump(path: str) -> None:
        time.sleep(1.0)  # let the pool's threads see the shutdown and end
        with open(path, "w") as out:
            stats = pstats.Stats(*profiles, stream=out)
            stats.sort_stats("cumulative").print_stats(60)
            stats.sort_stats("tottime").print_stats(40)

    return dump


def seed_store(db_url: str, job: str, made: list[tuple[str, str]], poll: float) -> None:
    """N watched builds, announced, first checks spread evenly over one poll period."""
    from bot.store import Store, builds

    store = Store.from_url(db_url)
    now = time.time()
    rows = [{"id": uuid.uuid4().hex, "created_at": now, "user_id": USERS[i % len(USERS)],
                 "channel_id": "CBUILDS", "job_name": "backend", "job_id": job, "build_no": no,
                 "daily_build_number": daily, "response_url": None, "announce": "posted",
                 "message_channel": "CBUILDS", "message_ts": f"1700000000.{i:06d}",
                 "watch": "watching",
                 "next_check_at": now + 1 + poll * i / len(made), "failures": 0}
            for i, (no, daily) in enumerate(made)]
    with store.engine.begin() as c:
        c.execute(builds.insert(), rows)
    store.close()


def measure_slow(n: int, *, share: float, slow_s: float, poll: float, periods: int,
                 slack: Any, codearts: Child, tmp: Path,
                 bot_path: str | None = None) -> dict[str, Any]:
    """Fast jobs' result latency while a slow job's status calls are each held slow_s."""
    from bot.store import Store, builds

    durations = [poll * (1.5 + periods * k / 10) for k in range(10)]
    made_by_job = codearts.ask(("seed_mixed", n, share, slow_s, durations))
    db = tmp / f"slow-{n}-{uuid.uuid4().hex[:6]}.db"
    store = Store.from_url(f"sqlite:///{db}")
    now = time.time()
    ids: dict[str, str] = {}
    rows = []
    i = 0
    for job, made in made_by_job:
        for no, daily in made:
            bid = uuid.uuid4().hex
            ids[f"1700000000.{i:06d}"] = f"{job}/{no}"  # thread ts -> build
            rows.append({"id": bid, "created_at": now, "user_id": USERS[i % len(USERS)],
                         "channel_id": "CBUILDS", "job_name": "backend", "job_id": job,
                         "build_no": no, "daily_build_number": daily, "response_url": None,
                         "announce": "posted", "message_channel": "CBUILDS",
                         "message_ts": f"1700000000.{i:06d}", "watch": "watching",
                         "next_check_at": now + 1 + poll * i / n, "failures": 0})
            i += 1
    with store.engine.begin() as c:
        c.execute(builds.insert(), rows)
    store.close()
    slow_job = made_by_job[0][0]
    values = bot_values(slack_api_url=slack.api_url, codearts_url=codearts.hello,
                        db_url=f"sqlite:///{db}", config=tmp / "buildbot.toml",
                        build_poll_seconds=poll)
    watcher = Child(watcher_child, values, str(tmp / f"slow-{n}.log"), bot_path, server=True)
    try:
        time.sleep(max(durations) + 2 * poll + 2)
    finally:
        watcher.close()
    ends = codearts.ask(("ends",))
    lags = []
    for call in slack.all_calls():
        key = ids.get(call.params.get("thread_ts") or "")
        if call.method == "chat.postMessage" and key and not key.startswith(slow_job):
            lags.append(call.at - ends[key])
    expected = sum(len(m) for j, m in made_by_job[1:])
    return {"builds": n, "slow_share": share, "slow_call_s": slow_s, "poll_s": poll,
            "fast_results_expected": expected, "fast_results_posted": len(lags),
            "lag_median_s": median(lags), "lag_p99_s": pct(lags, 99),
            "lag_max_s": max(lags) if lags else float("nan"),
            "goal_s": 2 * poll + 1.0}


def measure(n: int, *, poll: float, periods: int, slack_api_url: str,
            codearts: Child, tmp: Path, bot_path: str | None = None,
            slack: Any = None, progress: float = 10.0) -> dict[str, Any]:
    job, made = codearts.ask(("seed", n))
    db = tmp / f"watch-{n}-{uuid.uuid4().hex[:6]}.db"
    seed_store(f"sqlite:///{db}", job, made, poll)
    values = bot_values(slack_api_url=slack_api_url, codearts_url=codearts.hello,
                        db_url=f"sqlite:///{db}", config=tmp / "buildbot.toml",
                        build_poll_seconds=poll)
    values["progress_update_seconds"] = progress
    watcher = Child(watcher_child, values, str(tmp / f"watcher-{n}.log"), bot_path,
                    server=True)
    try:
        time.sleep(poll + 1)  # warm-up: one full period, so every build has been polled once
        t0, cpu0, _rss, _hwm = watcher.ask("sample")
        time.sleep(poll * periods)
        t1, cpu1, rss, hwm = watcher.ask("sample")
    finally:
        watcher.close()
    polls = codearts.ask(("polls", t0, t1))
    steps = polls.pop(STEPS_KEY, [])
    progress = progress_figures(slack, t0, t1, n) if slack is not None else {}
    wall = t1 - t0
    count = sum(len(ts) for ts in polls.values())
    gaps = [b - a for ts in polls.values() for a, b in itertools.pairwise(ts)]
    return {"builds": n, "poll_s": poll, "window_s": wall, "status_requests": count,
            "requests_per_build_per_poll": count / (n * wall / poll),
            "builds_polled": len(polls), "gap_median_s": median(gaps), "gap_p99_s": pct(gaps, 99),
            "cpu_pct_one_core": (cpu1 - cpu0) / wall * 100,
            "cpu_ms_per_status_request": (cpu1 - cpu0) * 1000 / max(1, count),
            "rss_before_watching_mb": watcher.hello / 1024, "rss_mb": rss / 1024,
            "peak_rss_mb": hwm / 1024, "steps_requests_per_build": len(steps) / n,
            **progress}


def progress_figures(slack: Any, t0: float, t1: float, n: int) -> dict[str, Any]:
    """chat.update calls in [t0, t1]: per build, per build per minute, and the most one
    message got within any 10 s (the bound: 1)."""
    by_ts: dict[str, list[float]] = defaultdict(list)
    for call in slack.all_calls():
        if call.method == "chat.update" and t0 <= call.at <= t1:
            by_ts[str(call.params.get("ts"))].append(call.at)
    worst = 0
    for times in by_ts.values():
        times.sort()
        worst = max(worst, max(sum(1 for u in times if t <= u < t + 10) for t in times))
    total = sum(len(v) for v in by_ts.values())
    minutes = max(1e-9, (t1 - t0) / 60)
    return {"progress_updates_per_build": total / n,
            "progress_updates_per_build_per_min": total / n / minutes,
            "progress_max_updates_per_message_per_10s": worst,
            "builds_updated": len(by_ts)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s poll (smoke run)")
    ap.add_argument("--poll", type=float, help="poll period in seconds (default 15, --quick 2)")
    ap.add_argument("--periods", type=int, default=3, help="measured poll periods per size")
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the sizes (interleaved)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--bot-path", help="folder with a patched copy of the bot package to run "
                    "(with --jobs: another bot, e.g. a worktree of an older commit, run "
                    "side by side with this one as 'before')")
    ap.add_argument("--progress-seconds", type=float, default=10.0,
                    help="PROGRESS_UPDATE_SECONDS of the bot (0: progress off, the baseline)")
    ap.add_argument("--slow-share", type=float, default=0.0,
                    help="share of builds whose status calls are slow (the slow-partner run)")
    ap.add_argument("--slow-seconds", type=float, default=10.0,
                    help="how long each slow status call is held")
    ap.add_argument("--jobs", help="N/J,...: N running builds over J jobs; status reads per "
                    "poll with the per-job history poll (e.g. 1000/20,5000/100)")
    ap.add_argument("--per-build", action="store_true",
                    help="with --jobs: also measure each build's own record call (before)")
    ap.add_argument("--progress", action="store_true",
                    help="with --jobs: live progress on (steps calls are counted apart)")
    ap.add_argument("--profile", help="with --jobs: write each watcher's CPU profile (all "
                    "threads, by CPU time) to PROFILE-<builds>-<jobs>-<bot>-<pass>.txt")
    ap.add_argument("--latency", action="store_true",
                    help="end of build -> thread reply, with and without the webhook")
    args = ap.parse_args()
    poll = args.poll or (2.0 if args.quick else 15.0)
    sizes = [int(s) for s in args.sizes.split(",")]
    quiet_logging()
    pinning = pin_cores(not args.no_pin)
    from tests.fakes.slack import FakeSlack

    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    (tmp / "buildbot.toml").write_text(config_text())
    results = []
    if args.slow_share > 0:
        return slow_main(args, poll, sizes, tmp, pinning)
    if args.jobs:
        return jobs_main(args, poll, pinning)
    if args.latency:
        return latency_main(poll, pinning)
    with FakeSlack() as slack:
        codearts = Child(codearts_child)
        try:
            for rep in range(args.repeat):
                for n in sizes:
                    r = measure(n, poll=poll, periods=args.periods, slack_api_url=slack.api_url,
                                codearts=codearts, tmp=tmp, bot_path=args.bot_path,
                                slack=slack, progress=args.progress_seconds)
                    results.append({"pass": rep + 1, **r})
                    print(f"{n:5d} builds: {r['requests_per_build_per_poll']:.2f} req/build/poll, "
                          f"CPU {r['cpu_pct_one_core']:.1f}% of a core, "
                          f"peak RSS {r['peak_rss_mb']:.0f} MB; progress: "
                          f"{r['progress_updates_per_build']:.2f} updates/build "
                          f"({r['progress_updates_per_build_per_min']:.2f}/min), at most "
                          f"{r['progress_max_updates_per_message_per_10s']} per message "
                          f"per 10 s, {r['steps_requests_per_build']:.2f} steps "
                          "requests/build", flush=True)
        finally:
            codearts.close()
    report(results, poll=poll, periods=args.periods, quick=args.quick, bot_path=args.bot_path,
           pinning=pinning, progress_seconds=args.progress_seconds)
    return 0


def slow_main(args: Any, poll: float, sizes: list[int], tmp: Path, pinning: str) -> int:
    from tests.fakes.slack import FakeSlack

    results = []
    with FakeSlack() as slack:
        from bench._common import widen_backlog

        widen_backlog(slack)
        codearts = Child(codearts_child)
        try:
            for n in sizes:
                r = measure_slow(n, share=args.slow_share, slow_s=args.slow_seconds, poll=poll,
                                 periods=args.periods, slack=slack, codearts=codearts, tmp=tmp,
                                 bot_path=args.bot_path)
                results.append(r)
        finally:
            codearts.close()
    print()
    print(pinning)
    print(table(["builds", "slow share", "slow call s", "poll s", "fast results",
                 "lag med s", "lag p99 s", "lag max s", "goal s"],
                [[r["builds"], r["slow_share"], r["slow_call_s"], r["poll_s"],
                  f"{r['fast_results_posted']}/{r['fast_results_expected']}",
                  r["lag_median_s"], r["lag_p99_s"], r["lag_max_s"], r["goal_s"]]
                 for r in results]))
    for r in results:
        met = r["fast_results_posted"] == r["fast_results_expected"] and \
            r["lag_p99_s"] <= r["goal_s"]
        print(f"{r['builds']} builds, {r['slow_share']:.0%} slow: fast results within "
              f"2 polls + 1 s (p99): {'met' if met else 'NOT met'}")
    path = write_results("watcher-slow" + ("-patched" if args.bot_path else ""),
                         {"runs": results, "pinning": pinning})
    print(f"written {path}")
    return 0


def report(results: list[dict[str, Any]], **meta: Any) -> None:
    by_size: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_size[r["builds"]].append(r)
    keys = ("requests_per_build_per_poll", "gap_median_s", "gap_p99_s", "cpu_pct_one_core",
            "cpu_ms_per_status_request", "rss_before_watching_mb", "peak_rss_mb",
            "progress_updates_per_build_per_min", "progress_max_updates_per_message_per_10s",
            "steps_requests_per_build")
    summary = {n: {k: median([r[k] for r in rs]) for k in keys} for n, rs in by_size.items()}
    print()
    print(meta["pinning"])
    print(f"poll {meta['poll']:g} s, {meta['periods']} periods measured, "
          f"medians over {max(len(v) for v in by_size.values())} pass(es)")
    print(table(["builds", "req/build/poll", "poll gap med s", "gap p99 s", "CPU % core",
                 "CPU ms/request", "RSS before MB", "peak RSS MB", "updates/build/min",
                 "max updates/msg/10 s", "steps req/build"],
                [[n, *(s[k] for k in keys)] for n, s in summary.items()]))
    base = summary.get(min(summary))
    if base and len(summary) > 1:
        for n, s in summary.items():
            if n != min(summary):
                grow = (s["peak_rss_mb"] - base["rss_before_watching_mb"]) / max(
                    1e-9, base["peak_rss_mb"] - base["rss_before_watching_mb"])
                print(f"{n} vs {min(summary)} builds ({n / min(summary):.0f}x): CPU "
                      f"{s['cpu_pct_one_core'] / max(1e-9, base['cpu_pct_one_core']):.1f}x, "
                      f"memory above the fixed part {grow:.1f}x")
    at = summary.get(1000)
    met = None
    if at is not None:
        met = at["peak_rss_mb"] < TARGET_MB and at["cpu_pct_one_core"] < TARGET_CPU
        print(f"target at 1,000 builds (< {TARGET_MB:.0f} MB, < {TARGET_CPU:.0f}% of a core): "
              f"{'met' if met else 'NOT met'}")
    name = "watcher" + ("" if meta["poll"] == 15 else f"-poll{meta['poll']:g}") + (
        "-patched" if meta.get("bot_path") else "") + (
        "-noprogress" if meta.get("progress_seconds") == 0 else "")
    path = write_results(name,
                         {"target": {"builds": 1000, "peak_rss_mb": TARGET_MB,
                                     "cpu_pct_one_core": TARGET_CPU},
                          "met_at_1000": met, "summary": summary, "passes": results, **meta})
    print(f"written {path}")


# --- per-job history polls: status reads per poll vs jobs and builds (issue 16) ---------

def seed_store_jobs(db_url: str, made_by_job: list[tuple[str, list[tuple[str, str]]]],
                    poll: float) -> None:
    """The builds of several jobs, announced, first checks spread over one poll period."""
    from bot.store import Store, builds

    store = Store.from_url(db_url)
    now = time.time()
    flat = [(job, no, daily) for job, made in made_by_job for no, daily in made]
    rows = [{"id": uuid.uuid4().hex, "created_at": now, "user_id": USERS[i % len(USERS)],
             "channel_id": "CBUILDS", "job_name": "backend", "job_id": job, "build_no": no,
             "daily_build_number": daily, "response_url": None, "announce": "posted",
             "message_channel": "CBUILDS", "message_ts": f"1700000000.{i:06d}",
             "watch": "watching", "next_check_at": now + 1 + poll * i / len(flat),
             "failures": 0} for i, (job, no, daily) in enumerate(flat)]
    with store.engine.begin() as c:
        c.execute(builds.insert(), rows)
    store.close()


def measure_jobs(n: int, jobs: int, *, poll: float, periods: int, slack_api_url: str,
                 codearts: Child, tmp: Path, history_polls: bool = True,
                 progress: float = 0.0, bot_path: str | None = None,
                 profile: str | None = None) -> dict[str, Any]:
    made_by_job = codearts.ask(("seed_jobs", n, jobs))
    db = tmp / f"jobs-{n}-{jobs}-{uuid.uuid4().hex[:6]}.db"
    seed_store_jobs(f"sqlite:///{db}", made_by_job, poll)
    values = bot_values(slack_api_url=slack_api_url, codearts_url=codearts.hello,
                        db_url=f"sqlite:///{db}", config=tmp / "buildbot.toml",
                        build_poll_seconds=poll)
    values["progress_update_seconds"] = progress
    watcher = Child(watcher_child, values, str(tmp / f"jobs-{n}-{jobs}.log"), bot_path,
                    history_polls, profile, server=True)
    try:
        # warm-up: every build polled once, and once more on its job's grid
        time.sleep(2 * poll + 1)
        codearts.ask(("reads", 0.0, 0.0))  # forget the warm-up's requests
        t0, cpu0, _rss, _hwm = watcher.ask("sample")
        time.sleep(poll * periods)
        t1, cpu1, rss, hwm = watcher.ask("sample")
    finally:
        watcher.close()
    reads = codearts.ask(("reads", t0, t1))
    wall = t1 - t0
    polls = wall / poll
    return {"builds": n, "jobs": jobs, "history_polls": history_polls, "poll_s": poll,
            "window_s": wall,
            "status_reads_per_poll": (reads["history"] + reads["record"]) / polls,
            "history_reads_per_poll": reads["history"] / polls,
            "record_reads_per_poll": reads["record"] / polls,
            "jobs_read": reads["history_jobs"],
            "steps_reads_per_poll": reads["steps"] / polls,
            "cpu_pct_one_core": (cpu1 - cpu0) / wall * 100,
            "cpu_us_per_build_per_poll": (cpu1 - cpu0) * 1e6 / (n * polls),
            "rss_before_watching_mb": watcher.hello / 1024, "rss_mb": rss / 1024,
            "peak_rss_mb": hwm / 1024, "bot": "before" if bot_path else "now"}


def jobs_main(args: Any, poll: float, pinning: str) -> int:
    """``--jobs``; with ``--bot-path``, the bot there ("before") and this one ("now") side
    by side, interleaved, ``--repeat`` passes; medians per row."""
    from tests.fakes.slack import FakeSlack

    sizes = [tuple(int(x) for x in part.split("/")) for part in args.jobs.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    (tmp / "buildbot.toml").write_text(config_text())
    bots = [args.bot_path, None] if args.bot_path else [None]
    results = []
    with FakeSlack() as slack:
        codearts = Child(codearts_child)
        try:
            for rep, (n, j), per_job, bot in itertools.product(
                    range(args.repeat), sizes, [True, False] if args.per_build else [True],
                    bots):
                profile = (f"{args.profile}-{n}-{j}-{'before' if bot else 'now'}-{rep + 1}.txt"
                           if args.profile else None)
                r = measure_jobs(n, j, poll=poll, periods=args.periods,
                                 slack_api_url=slack.api_url, codearts=codearts, tmp=tmp,
                                 history_polls=per_job,
                                 progress=args.progress_seconds if args.progress else 0.0,
                                 bot_path=bot, profile=profile)
                results.append({"pass": rep + 1, **r})
                print(f"pass {rep + 1}, {r['bot']}: {n} builds / {j} jobs "
                      f"({'history' if per_job else 'per build'}): "
                      f"{r['status_reads_per_poll']:.1f} status reads per poll "
                      f"({r['history_reads_per_poll']:.1f} history, "
                      f"{r['record_reads_per_poll']:.1f} record), "
                      f"CPU {r['cpu_pct_one_core']:.1f}% of a core "
                      f"({r['cpu_us_per_build_per_poll']:.0f} us per build per poll), "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        finally:
            codearts.close()
    rows = jobs_summary(results)
    print()
    print(pinning)
    print(f"poll {poll:g} s, {args.periods} periods measured, medians over {args.repeat} "
          "pass(es)")
    print(table(["builds", "jobs", "bot", "mode", "status reads/poll", "history/poll",
                 "record/poll", "CPU % core", "CPU us/build/poll", "RSS before MB",
                 "peak RSS MB", "goal: reads/poll <="],
                [[r["builds"], r["jobs"], r["bot"], "history" if r["history_polls"] else
                  "per build", r["status_reads_per_poll"], r["history_reads_per_poll"],
                  r["record_reads_per_poll"], r["cpu_pct_one_core"],
                  r["cpu_us_per_build_per_poll"], r["rss_before_watching_mb"],
                  r["peak_rss_mb"], r["jobs"]] for r in rows]))
    for r in rows:
        if r["history_polls"]:
            met = r["status_reads_per_poll"] <= r["jobs"] * 1.05
            print(f"{r['bot']}: {r['builds']} builds over {r['jobs']} jobs: status reads "
                  f"per poll <= jobs: {'met' if met else 'NOT met'}")
    path = write_results("watcher-jobs" + ("-vs-before" if args.bot_path else ""),
                         {"runs": results, "summary": rows, "poll": poll,
                          "periods": args.periods, "repeat": args.repeat,
                          "bot_path": args.bot_path, "pinning": pinning})
    print(f"written {path}")
    return 0


JOBS_FIGURES = ("status_reads_per_poll", "history_reads_per_poll", "record_reads_per_poll",
                "steps_reads_per_poll", "cpu_pct_one_core", "cpu_us_per_build_per_poll",
                "rss_before_watching_mb", "peak_rss_mb")


def jobs_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per size, mode and bot: the median of each figure over the passes."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["builds"], r["jobs"], r["history_polls"], r["bot"])].append(r)
    return [{"builds": n, "jobs": j, "history_polls": hp, "bot": bot, "passes": len(rs),
             **{k: median([r[k] for r in rs]) for k in JOBS_FIGURES}}
            for (n, j, hp, bot), rs in groups.items()]


# --- end of build -> thread reply, with and without the webhook -----------------------

LATENCY_JOBS = 12


def measure_latency(*, poll: float, webhook: bool, tmp: Path) -> dict[str, Any]:
    """Builds of LATENCY_JOBS jobs ending 5 s apart, followed by the real watcher thread;
    with ``webhook``, a call to /codearts/events at each build's end (as CodeArts makes)."""
    import threading

    import httpx

    from bot.store import builds
    from bot.webhook import HEADER
    from tests.harness import running_bot

    secret = "bench-webhook-secret-0123456789"
    extra = {"codearts_webhook_secret": secret} if webhook else {}
    folder = tmp / f"latency-{'hook' if webhook else 'poll'}-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    with running_bot(f"sqlite:///{folder / 'bot.db'}", folder, poll=poll,
                     progress_update_seconds=0, **extra) as bot:
        fake = bot.codearts
        ends: dict[str, tuple[str, float]] = {}  # thread ts -> (job, end, monotonic)
        rows = []
        now = time.time()
        for k in range(LATENCY_JOBS):
            job = uuid.uuid4().hex
            fake.add_job(job, duration=5.0 + 5.0 * k)
            made = httpx.post(fake.url + "/v3/jobs/build", json={"job_id": job},
                              headers={"X-Auth-Token": fake.token}).json()
            (build,) = fake.builds(job)
            ts = f"1700000000.{k:06d}"
            ends[ts] = (job, build.started + build.duration)
            rows.append({"id": uuid.uuid4().hex, "created_at": now, "user_id": USERS[k],
                         "channel_id": "CBUILDS", "job_name": "backend", "job_id": job,
                         "build_no": made["actual_build_number"],
                         "daily_build_number": made["daily_build_number"],
                         "response_url": None, "announce": "posted",
                         "message_channel": "CBUILDS", "message_ts": ts, "watch": "watching",
                         "next_check_at": now + poll * k / LATENCY_JOBS, "failures": 0})
        with bot.store.engine.begin() as c:
            c.execute(builds.insert(), rows)
        stop = threading.Event()

        def codearts_calls_the_webhook() -> None:
            for job, at in sorted(ends.values(), key=lambda e: e[1]):
                if stop.wait(max(0.0, at - time.monotonic())):
                    return
                httpx.post(bot.url + "/codearts/events", headers={HEADER: secret},
                           json={"job_id": job, "event": "build task succeeded"})

        sender = threading.Thread(target=codearts_calls_the_webhook, daemon=True)
        bot.runtime.watcher.start()
        if webhook:
            sender.start()
        last = max(at for _job, at in ends.values())
        try:
            bot.slack.wait_for(lambda: len([c for c in bot.slack.calls("chat.postMessage")
                                            if c.get("thread_ts")]) >= LATENCY_JOBS,
                               timeout=last - time.monotonic() + 3 * poll + 10)
        finally:
            stop.set()
        lags = [call.at - ends[call.params["thread_ts"]][1] for call in bot.slack.all_calls()
                if call.method == "chat.postMessage" and call.params.get("thread_ts") in ends]
    return {"webhook": webhook, "poll_s": poll, "results": len(lags),
            "lag_median_s": median(lags), "lag_p99_s": pct(lags, 99),
            "lag_max_s": max(lags) if lags else float("nan")}


def latency_main(poll: float, pinning: str) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    results = [measure_latency(poll=poll, webhook=hook, tmp=tmp) for hook in (False, True)]
    print()
    print(pinning)
    print(table(["webhook", "poll s", "results", "end->reply med s", "p99 s", "max s"],
                [[r["webhook"], r["poll_s"], r["results"], r["lag_median_s"], r["lag_p99_s"],
                  r["lag_max_s"]] for r in results]))
    hook = results[1]
    print(f"with the webhook, results within ~2 s of the end (max): "
          f"{'met' if hook['lag_max_s'] <= 2.0 else 'NOT met'}")
    path = write_results("watcher-latency", {"runs": results, "pinning": pinning})
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
