"""Faults: ``python -m bot`` killed with SIGKILL at a random instant of every Run, restarted.

What the users and the channel got, counted from what the stand-ins recorded.

    python -m bench.faults                    # 100 runs on SQLite, then 100 on PostgreSQL
    python -m bench.faults --quick            # 10 runs on each
    python -m bench.faults --db sqlite --runs 200 --seed 7
    python -m bench.faults --pg-url postgresql://postgres@127.0.0.1:5432/test
    python -m bench.faults --commit HEAD     # the bot of a commit, not the working tree's
    python -m bench.faults --settle 600      # give the last bot longer to finish

The bot runs as operators run it (``python -m bot``, a subprocess, the same
database and port across restarts) against the loopback stand-ins of
``tests/fakes`` in this process, with the defaults a user gets for everything but
``BUILD_POLL_SECONDS=0.5`` and builds that take 0.5 s, which only make results come
quickly. ``INTENT_GRACE_SECONDS`` and ``WATCH_LEASE_SECONDS`` keep their defaults
(120 s; max(60 s, 4 polls)): what a killed bot left open is taken over because its
heartbeat stopped (about 15 s after the kill), not because a shortened grace ran out.
Each run, back to back:

1. ``/build backend codeBranch=run-<i>`` (a parameter of its own, so every
   CodeArts build names its run), then wait for the Run/Cancel question at the
   run's ``response_url``;
2. arm one fault, drawn at random: none; CodeArts slow (0.3-1 s per answer);
   the run call's answer held 0.5-2 s (CodeArts starts the build, then waits);
   the channel post held 0.5-2 s (Slack posts it, then waits); the channel post
   and the thread reply held 0.3-1 s each; the reply to the user held 0.5-2 s.
   CodeArts answers in 30-150 ms otherwise;
3. click Run, and SIGKILL the bot at an instant drawn uniformly in 0-1.5 s after
   the click: the window covers the run call, the channel post, the reply to the
   user and the result in the thread;
4. start a new bot (same database, same port) and wait for ``/healthz``.

Work a killed bot left open (a run call, a post, a result) is settled by the
next processes while the next runs go on, so later kills also land in that
recovery. At the end the last bot gets up to 120 s to settle (every request
answered, every build announced and reported), then a quiet period, then
SIGTERM: the last kill's work is only taken over once that bot's heartbeat is 15 s
old, and a run call in flight at the kill is settled from the job's history after
that, so 60 s left too little margin. Counted afterwards, per database, from what
the stand-ins recorded:

* builds started: CodeArts builds, each mapped to its run by ``codeBranch``;
* announced: builds with a channel message (``chat.postMessage`` without
  ``thread_ts``, metadata ``buildbot_build``); by direct message, separately;
* followed: builds with a posted result (a thread reply with metadata
  ``buildbot_result``, or a direct message carrying the build);
* doubles: builds beyond the first for a run, channel messages beyond the first
  for a build, results beyond the first for a build;
* unknown: runs whose user was told the build "may or may not" have started
  (the stand-in's history always answers, so each could have been settled);
* false "nothing was started": runs told so although CodeArts started a build;
* restart to announcement: for each run whose build the killed bot started but had
  not announced (no channel message had arrived at the kill), the seconds from the
  restart that followed the kill (the new ``python -m bot`` launched) to the build's
  channel message arriving at the Slack stand-in, which stamps every call on arrival
  (``time.monotonic()``, the clock of this process): count, median and max.

Slack messages name the bot's build id (the request id); the bot's database maps
it to the run (``buildbot_requests.body``) and to the CodeArts build number
(``buildbot_builds.build_no``), read only. Goal: started = announced = followed,
every double 0, unknown 0, restart to announcement: max < 60 s. The bench is a
measurement: it exits 0 whatever it finds and prints the goals missed, with each
offending run's fault, kill instant and what the stand-ins recorded around it.
Figures go to ``bench/results/faults.json`` (``faults-quick.json`` for ``--quick``);
the bots' logs to ``bench/results/faults-<db>.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from bench._common import RESULTS, ROOT, quiet_logging, table, widen_backlog, write_results
from bot import messages as msg
from bot.standins.slack_requests import SlackSender
from bot.store import engine_url
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack
from tests.harness import BACKEND_ID, DOCS_ID, SECRET, run_value
from tests.test_process import env_for, free_port, wait_healthy

USER = "UALICE"
CHANNEL = "CBUILDS"
BUILD_SECONDS = 0.5
KILL_WINDOW = 1.5
# default for --settle: the last kill's intents are free once its heartbeat is 15 s old
SETTLE_LIMIT = 120.0
ANNOUNCE_GOAL = 60.0  # restart to announcement: max below this many seconds
QUIET = 3.0  # after settling: nothing more may arrive
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

# (name, weight): what is made slow around one Run
FAULTS = [("none", 30), ("CodeArts slow", 15), ("run answer held", 15),
          ("channel post held", 15), ("posts held", 15), ("user reply held", 10)]

LIVE: set[subprocess.Popen[bytes]] = set()  # killed on any way out


@dataclass
class Run:
    index: int
    branch: str
    hook: str
    fault: str = "none"
    hold: float = 0.0
    latency: float = 0.0
    kill_after: float = 0.0  # seconds after the click
    confirmed: bool = False
    clicked_at: float | None = None  # monotonic
    killed_at: float | None = None
    click_status: int | None = None  # the Run click's HTTP answer; None: no answer
    restart_seconds: float | None = None
    restarted_at: float | None = None  # monotonic: the restart after the kill began
    restart_to_announcement: float | None = None  # s, for a build unannounced at the kill


# --------------------------------------------------------------------------- the bot


class BotProcess:
    """``python -m bot`` on a fixed port; every start appends to one log file."""

    def __init__(self, env: dict[str, str], port: int, log: Path, bot_dir: Path = ROOT) -> None:
        self.env, self.port, self.log, self.bot_dir = env, port, log, bot_dir
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        t0 = time.monotonic()
        for attempt in range(5):  # the port may still be held for a moment after a kill
            with self.log.open("ab") as out:
                out.write(f"---- start {self.starts + 1} (attempt {attempt + 1})\n".encode())
                out.flush()
                # ``python -m`` imports from its working folder first: the bot under test
                proc = subprocess.Popen([sys.executable, "-m", "bot"], cwd=self.bot_dir,
                                        env={**self.env, "PYTHONPATH": str(self.bot_dir)},
                                        stdout=out, stderr=subprocess.STDOUT)
            LIVE.add(proc)
            try:
                wait_healthy(self.url, proc, timeout=30.0)  # type: ignore[arg-type]
            except AssertionError:
                _end(proc)
                time.sleep(0.5)
                continue
            self.proc = proc
            self.starts += 1
            return time.monotonic() - t0
        raise SystemExit(f"the bot did not start on port {self.port}; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            LIVE.discard(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc, sigterm=True)
            self.proc = None


def _end(proc: subprocess.Popen[bytes], *, sigterm: bool = False) -> None:
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if sigterm else signal.SIGKILL)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    finally:
        LIVE.discard(proc)


def _kill_all() -> None:
    for proc in list(LIVE):
        try:
            proc.kill()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        LIVE.discard(proc)


# --------------------------------------------------------------------------- faults


def clear_faults(slack: FakeSlack, codearts: FakeCodeArts) -> None:
    """Forget switches a run armed but never used (the kill came first): one run's
    fault never lands in the next run. The stand-ins have no public call for this."""
    with slack._lock:
        slack._faults.clear()
    with codearts._lock:
        codearts._rules.clear()


def arm(run: Run, rng: random.Random, slack: FakeSlack, codearts: FakeCodeArts) -> None:
    names, weights = zip(*FAULTS, strict=True)
    run.fault = rng.choices(names, weights)[0]
    run.latency = rng.uniform(0.03, 0.15)
    if run.fault == "CodeArts slow":
        run.latency = rng.uniform(0.3, 1.0)
    elif run.fault == "run answer held":
        run.hold = rng.uniform(0.5, 2.0)
        codearts.hang(run.hold, path_prefix="/v3/jobs/build")
    elif run.fault == "channel post held":
        run.hold = rng.uniform(0.5, 2.0)
        slack.accept_slowly("chat.postMessage", run.hold)
    elif run.fault == "posts held":
        run.hold = rng.uniform(0.3, 1.0)
        slack.accept_slowly("chat.postMessage", run.hold, count=2)
    elif run.fault == "user reply held":
        run.hold = rng.uniform(0.5, 2.0)
        slack.accept_slowly("response_url", run.hold)
    codearts.latency = run.latency
    run.kill_after = rng.uniform(0.0, KILL_WINDOW)


# --------------------------------------------------------------------------- one database


def _has_run(message: dict[str, Any]) -> bool:
    try:
        run_value(message)
    except AssertionError:
        return False
    return True


def _wait(predicate: Any, timeout: float) -> Any:
    """``predicate()`` once it is truthy, or its last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.01)


def one_run(run: Run, bot: BotProcess, rng: random.Random, slack: FakeSlack,
            codearts: FakeCodeArts) -> None:
    clear_faults(slack, codearts)
    codearts.latency = rng.uniform(0.03, 0.15)
    sender = SlackSender(bot.url + "/slack/events", SECRET)
    try:
        try:
            sender.command(f"backend codeBranch={run.branch}", user=USER, channel=CHANNEL,
                           response_url=run.hook)
        except httpx.HTTPError:
            pass
        question = _wait(lambda: [r for r in slack.responses(run.hook) if _has_run(r)], 10.0)
        arm(run, rng, slack, codearts)  # drawn even without a question: runs stay in step
        if not question:
            return
        run.confirmed = True
        value = run_value(question[0])
        sent = threading.Event()

        def click() -> None:
            run.clicked_at = time.monotonic()
            sent.set()
            try:
                run.click_status = sender.click(msg.RUN, value, user=USER, channel=CHANNEL,
                                                response_url=run.hook).status_code
            except httpx.HTTPError:
                run.click_status = None

        clicker = threading.Thread(target=click, daemon=True)
        clicker.start()
        sent.wait(5)
        assert run.clicked_at is not None
        pause = run.clicked_at + run.kill_after - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        run.killed_at = time.monotonic()
        bot.kill()
        clicker.join(15)
    finally:
        sender.close()
    run.restarted_at = time.monotonic()
    run.restart_seconds = bot.start()


def settle(bot: BotProcess, engine: sa.Engine, codearts: FakeCodeArts, slack: FakeSlack,
           limit: float) -> tuple[float, bool]:
    """Wait until nothing is open: no run call unsettled, every build announced and its
    result reported, every CodeArts build ended; then a quiet period. (seconds, settled)"""
    t0 = time.monotonic()
    settled = False
    while time.monotonic() - t0 < limit:
        if bot.proc is None or bot.proc.poll() is not None:
            bot.start()
        with engine.connect() as c:
            sending = c.execute(sa.text("SELECT count(*) FROM buildbot_requests "
                                        "WHERE state = 'running'")).scalar_one()
            open_builds = c.execute(sa.text(
                "SELECT count(*) FROM buildbot_builds WHERE watch <> 'done' "
                "OR announce = 'posting'")).scalar_one()
        now = time.monotonic()
        running = [b for b in codearts.builds(BACKEND_ID) if b.status(now) == "RUNNING"]
        if sending == 0 and open_builds == 0 and not running:
            settled = True
            break
        time.sleep(0.25)
    waited = time.monotonic() - t0
    before = len(slack.all_calls())
    time.sleep(QUIET)
    if len(slack.all_calls()) != before:  # something was still arriving: a little longer
        time.sleep(QUIET)
    return waited, settled


def bench_db(kind: str, args: argparse.Namespace, bot_dir: Path, log: Path) -> dict[str, Any]:
    runs_n, seed = args.runs, args.seed
    rng = random.Random(seed)  # the same schedule on every database
    schema = None
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp, FakeSlack() as slack, \
            FakeCodeArts(build_duration=BUILD_SECONDS) as codearts:
        widen_backlog(slack, codearts)
        codearts.add_job(BACKEND_ID, duration=BUILD_SECONDS)
        codearts.add_job(DOCS_ID)
        slack.usergroups["SDEVS"] = []
        if kind == "sqlite":
            db_url = f"sqlite:///{Path(tmp) / 'buildbot.db'}"
        else:
            db_url, schema = _own_schema(args.pg_url)
        port = free_port()
        env = env_for(slack, codearts, Path(tmp), db_url, port)
        # the defaults a user gets: no grace or lease shortened (``env_for`` sets a lease
        # for the tests; the environment the bench was started in might set either)
        for name in ("WATCH_LEASE_SECONDS", "INTENT_GRACE_SECONDS"):
            env.pop(name, None)
        env.update(BUILD_POLL_SECONDS="0.5", LOG_LEVEL="INFO")
        log.write_bytes(b"")
        bot = BotProcess(env, port, log, bot_dir)
        engine = sa.create_engine(engine_url(db_url))
        runs = [Run(i, f"run-{i}", slack.response_url()) for i in range(1, runs_n + 1)]
        t0 = time.monotonic()
        try:
            bot.start()
            for run in runs:
                one_run(run, bot, rng, slack, codearts)
                if run.index % 10 == 0:
                    print(f"  {kind}: {run.index}/{runs_n} runs, "
                          f"{time.monotonic() - t0:.0f} s", flush=True)
            clear_faults(slack, codearts)
            codearts.latency = 0.05
            waited, settled = settle(bot, engine, codearts, slack, args.settle)
            wall = time.monotonic() - t0
            bot.stop()
            data = count(runs, slack, codearts, engine)
        finally:
            bot.stop()
            _kill_all()
            engine.dispose()
            if schema:
                _drop_schema(args.pg_url, schema)
    data.update(database=kind, wall_seconds=round(wall, 1), settle_seconds=round(waited, 1),
                settled=settled, bot_starts=bot.starts,
                tracebacks_in_log=log.read_text(errors="replace").count("Traceback"),
                log=str(log.relative_to(ROOT)))
    return data


def _own_schema(base: str) -> tuple[str, str]:
    schema = "faults_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(engine_url(base))
    try:
        with admin.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    finally:
        admin.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


def _drop_schema(base: str, schema: str) -> None:
    admin = sa.create_engine(engine_url(base))
    try:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


# --------------------------------------------------------------------------- counting


def count(runs: list[Run], slack: FakeSlack, codearts: FakeCodeArts,
          engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as c:
        requests = {rid: json.loads(body) for rid, body in
                    c.execute(sa.text("SELECT id, body FROM buildbot_requests"))}
        states = Counter(s for (s,) in c.execute(sa.text("SELECT state FROM buildbot_requests")))
        recorded = list(c.execute(sa.text(
            "SELECT id, build_no, daily_build_number FROM buildbot_builds WHERE job_id = :j"),
            {"j": BACKEND_ID}))
    branch_of = {rid: _param(body, "codeBranch") for rid, body in requests.items()}
    bot_id_of_no = {str(no): bid for bid, no, _d in recorded}
    by_daily = {daily: bid for bid, _no, daily in recorded if daily}
    by_no = {str(no): bid for bid, no, _d in recorded}

    # CodeArts: builds per run
    ca = {b.number: _param(b.body, "codeBranch") for b in codearts.builds(BACKEND_ID)}
    builds_of_run: dict[str, list[int]] = defaultdict(list)
    for number, branch in ca.items():
        builds_of_run[branch].append(number)
    # a build the bot follows for a request that did not send it, or follows twice
    numbers_recorded = Counter(str(no) for _bid, no, _d in recorded)
    wrong = [f"request {bid} ({branch_of.get(bid)}) follows build #{no} ({ca.get(int(no))})"
             for bid, no, _d in recorded
             if not str(no).isdigit() or ca.get(int(no)) != branch_of.get(bid)]
    wrong += [f"build #{no} recorded for {n} requests"
              for no, n in numbers_recorded.items() if n > 1]
    run_calls: dict[str, list[float]] = defaultdict(list)
    for req in codearts.requests_to("/v3/jobs/build", "POST"):
        run_calls[_param(req.body, "codeBranch")].append(req.time)

    # Slack: channel messages and results per bot build id
    posts: dict[str, list[float]] = defaultdict(list)
    dm_posts: dict[str, list[float]] = defaultdict(list)
    results: dict[str, list[float]] = defaultdict(list)
    dm_results: dict[str, list[float]] = defaultdict(list)
    unmapped: list[str] = []
    for call in slack.all_calls():
        if call.method != "chat.postMessage":
            continue
        p = call.params
        channel = str(p.get("channel") or "")
        kind, bid = _kind_and_build(p, by_daily, by_no)
        if channel.startswith("U"):
            if kind == "result" and bid:
                dm_results[bid].append(call.at)
            elif kind == "build" and bid:
                dm_posts[bid].append(call.at)
            else:
                unmapped.append(str(p.get("text"))[:120])
        elif p.get("thread_ts"):
            if kind == "result" and bid:
                results[bid].append(call.at)
            else:  # a note in a thread (stop requests…): none in this bench
                unmapped.append(str(p.get("text"))[:120])
        elif kind == "build" and bid:
            posts[bid].append(call.at)
        else:
            unmapped.append(str(p.get("text"))[:120])

    started = announced = announced_dm = followed = followed_dm = 0
    double_builds = double_posts = double_results = 0
    unknown = false_refusals = told_not_started = silent = no_ack = 0
    phases: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    findings: list[dict[str, Any]] = []
    to_announcement: list[float] = []
    unannounced_at_kill = 0  # ... and never announced in the channel
    for run in runs:
        numbers = builds_of_run.get(run.branch, [])
        texts = [(r.get("text") or "") for r in slack.responses(run.hook)]
        after_question = texts[1:]
        bids = [bot_id_of_no.get(str(n)) for n in numbers]
        n_posts = [len(posts.get(b, [])) if b else 0 for b in bids]
        n_results = [len(results.get(b, [])) + len(dm_results.get(b, [])) if b else 0
                     for b in bids]
        started += len(numbers)
        announced += sum(1 for n in n_posts if n)
        announced_dm += sum(1 for b in bids if b and not posts.get(b) and dm_posts.get(b))
        followed += sum(1 for n in n_results if n)
        followed_dm += sum(1 for b in bids if b and dm_results.get(b))
        run_doubles = max(0, len(numbers) - 1)
        post_doubles = sum(max(0, n - 1) for n in n_posts)
        result_doubles = sum(max(0, n - 1) for n in n_results)
        double_builds += run_doubles
        double_posts += post_doubles
        double_results += result_doubles
        is_unknown = any("may or may not" in t for t in after_question)
        refused = any("nothing was started" in t.lower() for t in after_question)
        unknown += is_unknown
        false_refusal = refused and bool(numbers)
        false_refusals += false_refusal
        told_not_started += refused and not numbers
        if run.confirmed and run.click_status is None:
            no_ack += 1
        elif run.confirmed and not numbers and not after_question:
            silent += 1
        phase = _phase(run, run_calls.get(run.branch, []), bids, posts, results, dm_results)
        phases[phase] += 1
        # a build the killed bot started (the bench clicks Run once, so every build of the
        # run is that bot's) whose channel message came after the kill: from a later bot
        first_post = min((t for b in bids if b for t in posts.get(b, [])), default=None)
        late_announcement = False
        if numbers and run.killed_at is not None and run.restarted_at is not None:
            if first_post is None:
                unannounced_at_kill += 1
            elif first_post >= run.killed_at:
                run.restart_to_announcement = round(first_post - run.restarted_at, 3)
                to_announcement.append(run.restart_to_announcement)
                late_announcement = run.restart_to_announcement >= ANNOUNCE_GOAL
        faults[run.fault] += 1
        problems = []
        if run_doubles:
            problems.append(f"{len(numbers)} builds")
        if post_doubles:
            problems.append("announced twice")
        if result_doubles:
            problems.append("result posted twice")
        if is_unknown:
            problems.append("told 'may or may not have started'")
        if false_refusal:
            problems.append("told 'nothing was started' but a build started")
        if any(n == 0 for n in n_posts):
            problems.append("a build not announced in the channel")
        if any(n == 0 for n in n_results):
            problems.append("a build without a posted result")
        if late_announcement:
            problems.append(f"announced {run.restart_to_announcement:.1f} s after the restart")
        if problems:
            findings.append(_finding(run, problems, phase, numbers, bids, run_calls, posts,
                                     dm_posts, results, dm_results, texts, slack))

    confirmed = sum(1 for r in runs if r.confirmed)
    data: dict[str, Any] = {
        "runs": len(runs), "confirmed": confirmed,
        "clicks_acked": sum(1 for r in runs if r.click_status == 200),
        "builds_started": started, "builds_announced": announced,
        "builds_announced_by_dm_only": announced_dm, "builds_followed": followed,
        "results_by_dm": followed_dm,
        "double_builds": double_builds, "double_announcements": double_posts,
        "double_results": double_results, "told_unknown": unknown,
        "told_not_started_but_started": false_refusals,
        "told_not_started_none_started": told_not_started,
        "click_not_acked": no_ack, "silent_runs": silent,
        "kill_phase": dict(phases), "faults": dict(faults),
        "wrong_adoptions": len(wrong), "wrong_adoption_details": wrong[:20],
        "request_states": dict(states), "unmapped_messages": unmapped[:20],
        "restart_seconds_median": _median([r.restart_seconds for r in runs
                                           if r.restart_seconds is not None]),
        "restart_to_announcement_runs": len(to_announcement),
        "restart_to_announcement_median_s": _median(to_announcement),
        "restart_to_announcement_max_s": max(to_announcement, default=None),
        "restart_to_announcement_never": unannounced_at_kill,
        "findings": findings, "runs_detail": [asdict(r) for r in runs],
    }
    data["goals"] = {
        "started = announced = followed": started == announced == followed,
        "no double build": double_builds == 0,
        "no double announcement": double_posts == 0,
        "no double result": double_results == 0,
        "no 'may or may not' (the history always answers)": unknown == 0,
        "no false 'nothing was started'": false_refusals == 0,
        "no build followed for the wrong request": not wrong,
        f"restart to announcement: max < {ANNOUNCE_GOAL:.0f} s":
            all(t < ANNOUNCE_GOAL for t in to_announcement),
    }
    return data


def _param(body: Any, name: str) -> str:
    for p in (body or {}).get("parameter") or []:
        if isinstance(p, dict) and p.get("name") == name:
            return str(p.get("value"))
    return ""


_DAILY = re.compile(r"\b(\d{8}\.\d+)\b")
_NUMBER = re.compile(r"#(\d+)\b")


def _kind_and_build(p: dict[str, Any], by_daily: dict[str, str],
                    by_no: dict[str, str]) -> tuple[str, str | None]:
    """("build" | "result" | "other", the bot's build id) of a posted message: from its
    metadata, else its Rebuild button (a result), else the build number in its text."""
    meta = p.get("metadata") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    bid = (meta.get("event_payload") or {}).get("build_id")
    event = meta.get("event_type")
    if event == "buildbot_build":
        return "build", bid
    if event == "buildbot_result":
        return "result", bid
    blocks = p.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    for block in blocks:
        for element in block.get("elements", []) if isinstance(block, dict) else []:
            if isinstance(element, dict) and element.get("action_id") == msg.REBUILD:
                return "result", str(element.get("value"))
    text = str(p.get("text") or "")
    found = next((by_daily[d] for d in _DAILY.findall(text) if d in by_daily), None) \
        or next((by_no[n] for n in _NUMBER.findall(text) if n in by_no), None)
    if "could not confirm that its message" in text:
        return "build", found
    if "could not post this in the build's thread" in text or "has not ended after" in text:
        return "result", found
    return "other", found


def _phase(run: Run, calls: list[float], bids: list[str | None], posts: dict[str, list[float]],
           results: dict[str, list[float]], dm_results: dict[str, list[float]]) -> str:
    """How far the killed bot had got with this run when it was killed."""
    if not run.confirmed or run.killed_at is None:
        return "not clicked"
    k = run.killed_at
    if run.click_status is None:
        return "0 click not acked"
    if not any(t < k for t in calls):
        return "1 before the run call"
    first_post = min((t for b in bids if b for t in posts.get(b, [])), default=None)
    if first_post is None or first_post >= k:
        return "2 run call made, no channel post yet"
    first_result = min((t for b in bids if b for t in results.get(b, []) + dm_results.get(b, [])),
                       default=None)
    if first_result is None or first_result >= k:
        return "3 channel post made, no result yet"
    return "4 result posted"


def _finding(run: Run, problems: list[str], phase: str, numbers: list[int],
             bids: list[str | None], run_calls: dict[str, list[float]],
             posts: dict[str, list[float]], dm_posts: dict[str, list[float]],
             results: dict[str, list[float]], dm_results: dict[str, list[float]],
             texts: list[str], slack: FakeSlack) -> dict[str, Any]:
    """A run that missed a goal: its fault, the kill instant, and every arrival the
    stand-ins recorded for it, in seconds after the click."""
    c0 = run.clicked_at or 0.0

    def rel(ts: list[float]) -> list[float]:
        return [round(t - c0, 3) for t in sorted(ts)]

    hook_path = urlsplit(run.hook).path
    replies = [(round(c.at - c0, 3), str(c.params.get("text") or "")[:160])
               for c in slack.all_calls() if c.method == "response_url" and c.path == hook_path]
    return {
        "run": run.index, "branch": run.branch, "problems": problems, "fault": run.fault,
        "hold_s": round(run.hold, 3), "codearts_latency_s": round(run.latency, 3),
        "kill_after_click_s": round(run.kill_after, 3), "phase_at_kill": phase,
        "restart_after_click_s": (None if run.restarted_at is None
                                  else round(run.restarted_at - c0, 3)),
        "restart_to_announcement_s": run.restart_to_announcement,
        "click_status": run.click_status, "codearts_builds": numbers, "bot_build_ids": bids,
        "run_calls_at": rel(run_calls.get(run.branch, [])),
        "channel_posts_at": {b: rel(posts.get(b, [])) for b in bids if b},
        "dm_announcements_at": {b: rel(dm_posts.get(b, [])) for b in bids if b and dm_posts.get(b)},
        "thread_results_at": {b: rel(results.get(b, [])) for b in bids if b},
        "dm_results_at": {b: rel(dm_results.get(b, [])) for b in bids if b and dm_results.get(b)},
        "user_replies": replies,
    }


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return round(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2, 3)


# --------------------------------------------------------------------------- report

ROWS = [
    ("runs (killed once each)", "runs"),
    ("Run clicks acknowledged", "clicks_acked"),
    ("builds started in CodeArts", "builds_started"),
    ("builds announced (channel message)", "builds_announced"),
    ("builds followed to a posted result", "builds_followed"),
    ("  of which results by direct message", "results_by_dm"),
    ("double builds", "double_builds"),
    ("double announcements", "double_announcements"),
    ("double results", "double_results"),
    ("told 'may or may not have started'", "told_unknown"),
    ("told 'nothing was started', build started", "told_not_started_but_started"),
    ("told 'nothing was started', none started", "told_not_started_none_started"),
    ("builds followed for the wrong request", "wrong_adoptions"),
    ("click not acked (bot died first)", "click_not_acked"),
    ("Run acked, then nothing said, no build", "silent_runs"),
    ("bot starts", "bot_starts"),
    ("tracebacks in the bots' log", "tracebacks_in_log"),
    ("restart to /healthz, median s", "restart_seconds_median"),
    ("unannounced at the kill, announced later", "restart_to_announcement_runs"),
    ("  restart to announcement, median s", "restart_to_announcement_median_s"),
    ("  restart to announcement, max s", "restart_to_announcement_max_s"),
    ("unannounced at the kill, never announced", "restart_to_announcement_never"),
    ("settle at the end, s", "settle_seconds"),
    ("wall time, s", "wall_seconds"),
]


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, out: Path) -> None:
    dbs = list(results)
    print()
    print(f"faults: {args.runs} runs per database, seed {args.seed}, SIGKILL uniform in "
          f"0-{KILL_WINDOW} s after each Run click; bot under test: {args.measured}")
    rows = [[label, *(_cell(results[d].get(key)) for d in dbs)] for label, key in ROWS]
    print(table(["figure", *dbs], rows))
    for d in dbs:
        phases = ", ".join(f"{k[2:]} {v}" for k, v in sorted(results[d]["kill_phase"].items()))
        print(f"  {d}: killed at: {phases}")
    print("goal: started = announced = followed, every double 0, unknown 0 where the "
          "history could settle it (the stand-in's always can); restart to announcement: "
          f"max < {ANNOUNCE_GOAL:.0f} s")
    for d in dbs:
        missed = [g for g, ok in results[d]["goals"].items() if not ok]
        if not results[d]["settled"]:
            missed.append(f"settled within {args.settle:.0f} s")
        print(f"  {d}: " + ("all goals met" if not missed else "MISSED: " + "; ".join(missed)))
    for d in dbs:
        findings = results[d]["findings"]
        for f in findings[:10]:
            print(f"  {d} run {f['run']} ({f['branch']}): {', '.join(f['problems'])}; fault "
                  f"{f['fault']} (hold {f['hold_s']} s), killed {f['kill_after_click_s']} s "
                  f"after the click ({f['phase_at_kill'][2:]}); CodeArts builds "
                  f"{f['codearts_builds']}, restart at {f['restart_after_click_s']}, "
                  f"run calls at {f['run_calls_at']}, channel posts "
                  f"{f['channel_posts_at']}, results {f['thread_results_at']} "
                  f"DM {f['dm_results_at']}")
            for at, text in f["user_replies"]:
                print(f"      user reply at {at} s: {text[:110]}")
        if len(findings) > 10:
            print(f"  {d}: {len(findings) - 10} more in {out}")
        if results[d]["unmapped_messages"]:
            print(f"  {d}: messages not mapped to a build: {results[d]['unmapped_messages'][:3]}")
    print(f"written to {out.relative_to(ROOT)}")


def _bot_under_test(args: argparse.Namespace, snapshot: Path) -> tuple[Path, str]:
    """The folder ``python -m bot`` runs from, and how to name it in the figures."""
    if args.bot_path:
        return args.bot_path.resolve(), f"patched copy in {args.bot_path}"
    if args.commit:
        sha = subprocess.run(["git", "rev-parse", "--verify", f"{args.commit}^{{commit}}"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        archive = subprocess.run(["git", "archive", "--format=tar", sha, "bot"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(snapshot)], input=archive, check=True)
        return snapshot, f"commit {sha[:12]}"
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "bot"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return ROOT, f"working tree at {head or '?'}" + (" with changes in bot/" if dirty else "")


def _cell(v: Any) -> Any:
    if v is None:
        return "-"
    return v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per database (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="10 runs per database")
    parser.add_argument("--pg-url", default=PG_URL,
                        help="PostgreSQL server to use (a schema of its own, dropped after); "
                             "default TEST_DATABASE_URL or postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--settle", type=float, default=SETTLE_LIMIT,
                        help="seconds the last bot gets to settle everything "
                             f"(default {SETTLE_LIMIT:.0f})")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--commit", help="run the bot package of this commit (git archive into a "
                                        "temporary folder) instead of the working tree's")
    which.add_argument("--bot-path", type=Path,
                       help="folder holding a patched copy of the bot package to run")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 10
    quiet_logging()
    # a SIGTERM to the bench unwinds through the finally blocks, which stop every bot
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    name = ("faults-quick" if args.quick else "faults") + ("-patched" if args.bot_path else "")
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="faults-bot-") as snapshot:
        bot_dir, args.measured = _bot_under_test(args, Path(snapshot))
        try:
            for kind in dbs:
                print(f"{kind}: {args.runs} runs ({args.measured})", flush=True)
                RESULTS.mkdir(parents=True, exist_ok=True)
                log = RESULTS / f"{name}-{kind}.log"
                results[kind] = bench_db(kind, args, bot_dir, log)
        finally:
            _kill_all()
    out = write_results(name, {"runs": args.runs, "seed": args.seed, "bot": args.measured,
                               "kill_window_s": KILL_WINDOW, "build_seconds": BUILD_SECONDS,
                               "settle_limit_s": args.settle, "databases": results})
    report(results, args, out)
    return 0  # a measurement: the goals missed are printed, not an exit status


if __name__ == "__main__":
    sys.exit(main())
