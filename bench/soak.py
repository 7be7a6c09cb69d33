"""Soak: 2,000 mixed commands and clicks from 20 concurrent users against ``python -m bot``.

    python bench/soak.py                       # SQLite in a temporary folder
    python bench/soak.py --database-url postgresql://postgres@127.0.0.1:5432/test
    python bench/soak.py --ops 5000 --users 50

The bot runs as in production (``python -m bot``: waitress, the watcher, the worker
pool) in a child process, against the loopback stand-ins for Slack and CodeArts in
this one. Each user repeats a random scenario until the run has sent ``--ops``
requests: a valid command then Run; Run twice; two Runs at once; Cancel (then a late
Run); a confirmation made to expire (its ``expires_at`` moved into the past) then
Run; a confirmation left unanswered; an invalid command; help; a job that starts
without asking.

Checks, printed and written to ``bench/results/soak.json``:

* no lost confirmation: every valid command of a confirming job got exactly one
  Run/Cancel question at its response_url;
* no duplicate build: runs sent to CodeArts == requests the store shows claimed
  (pending -> running, or started at once) == builds the scenarios expected;
* every unanswered confirmation was expired by the bot, with a message;
* memory flat: the bot's RSS, sampled through the run, in the last quarter is within
  10 % (or 8 MiB) of the first quarter.

Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx
import sqlalchemy as sa

from bot import messages as msg
from bot.store import engine_url
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack
from tests.harness import BACKEND_ID, DOCS_ID
from tests.slack_requests import SlackSender

SECRET = "soak-signing-secret-0123456789"
BOT_TOKEN = "xoxb-soak-bot-token"
CHANNEL = "CSOAK"
CONFIG = f"""
admins = ["USOAKADMIN"]

[jobs.backend]
id = "{BACKEND_ID}"
description = "Backend CI"
users = ["*"]
channels = ["{CHANNEL}"]

[jobs.backend.params.codeBranch]
default = "master"
pattern = '^[A-Za-z0-9._/-]+$'

[jobs.docs]
id = "{DOCS_ID}"
description = "Docs site"
users = ["*"]
confirm = false
allow_extra_params = true
"""
INVALID = ["backend codeBranch=a;b", "backend PATH=/tmp", "backend Ld_Preload=x", "nosuchjob",
           BACKEND_ID, "backend master", 'backend msg="open', "backend x=" + "y" * 9000]
WEIGHTS = {"run": 25, "double": 10, "race": 5, "cancel": 10, "expire": 5, "abandon": 5,
           "invalid": 25, "help": 5, "direct": 10}
BUILDS_EXPECTED = {"run": 1, "double": 1, "race": 1, "direct": 1}


@dataclass
class Tally:
    """What the load generator did and saw; shared by the user threads."""

    ops_left: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    scenarios: Counter[str] = field(default_factory=Counter)
    ack_ms: list[float] = field(default_factory=list)
    bad_acks: list[str] = field(default_factory=list)
    confirm_urls: list[str] = field(default_factory=list)  # valid commands of a confirming job
    abandoned: list[tuple[str, str]] = field(default_factory=list)  # (request id, url)
    expected_builds: int = 0
    late_clicks_answered: int = 0
    late_clicks: int = 0

    def take(self, n: int) -> bool:
        with self.lock:
            if self.ops_left < n:
                return False
            self.ops_left -= n
            return True


class Soak:
    def __init__(self, args: argparse.Namespace, slack: FakeSlack, codearts: FakeCodeArts,
                 url: str, engine: sa.Engine) -> None:
        self.args = args
        self.slack = slack
        self.codearts = codearts
        self.sender = SlackSender(url + "/slack/events", SECRET)
        self.sender.http = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=100))
        self.engine = engine
        self.tally = Tally(ops_left=args.ops)

    # --- one request, timed ------------------------------------------------------

    def _timed(self, fn: Any, *a: Any, **kw: Any) -> httpx.Response:
        started = time.perf_counter()
        resp = fn(*a, **kw)
        elapsed = (time.perf_counter() - started) * 1000
        with self.tally.lock:
            self.tally.ack_ms.append(elapsed)
            if resp.status_code != 200:
                self.tally.bad_acks.append(f"{resp.status_code} {resp.text[:80]}")
        return resp

    def command(self, text: str, user: str) -> tuple[httpx.Response, str]:
        url = self.slack.response_url()
        return self._timed(self.sender.command, text, user=user, channel=CHANNEL,
                           response_url=url), url

    def click(self, action: str, rid: str, user: str, url: str) -> httpx.Response:
        return self._timed(self.sender.click, action, rid, user=user, channel=CHANNEL,
                           response_url=url)

    def question(self, url: str, timeout: float = 20.0) -> str | None:
        """The Run button's value once the confirmation arrived, or None (lost)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.slack.responses(url):
                value = _run_value(body)
                if value:
                    return value
            time.sleep(0.02)
        return None

    def wait_posts(self, url: str, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            posts = self.slack.responses(url)
            if len(posts) >= n:
                return posts
            time.sleep(0.02)
        return self.slack.responses(url)

    # --- scenarios ---------------------------------------------------------------------

    COST: ClassVar[dict[str, int]] = {
            "run": 2, "double": 3, "race": 3, "cancel": 3, "expire": 2, "abandon": 1,
            "invalid": 1, "help": 1, "direct": 1}

    def user_loop(self, user: str, seed: int) -> None:
        rng = random.Random(seed)
        names, weights = zip(*WEIGHTS.items(), strict=True)
        while True:
            kind = rng.choices(names, weights)[0]
            if not self.tally.take(self.COST[kind]):
                if not self.tally.take(1):
                    return
                kind = "invalid"  # spend the last few requests on cheap ones
            getattr(self, f"do_{kind}")(user, rng)
            with self.tally.lock:
                self.tally.scenarios[kind] += 1
                self.tally.expected_builds += BUILDS_EXPECTED.get(kind, 0)

    def _confirmed(self, user: str, rng: random.Random) -> tuple[str | None, str]:
        branch = rng.choice(["master", "develop", "release/1.2", "feature_x"])
        _resp, url = self.command(f"backend codeBranch={branch}", user)
        with self.tally.lock:
            self.tally.confirm_urls.append(url)
        return self.question(url), url

    def do_run(self, user: str, rng: random.Random) -> None:
        rid, url = self._confirmed(user, rng)
        if rid:
            self.click(msg.RUN, rid, user, url)

    def do_double(self, user: str, rng: random.Random) -> None:
        rid, url = self._confirmed(user, rng)
        if rid:
            self.click(msg.RUN, rid, user, url)
            self.click(msg.RUN, rid, user, url)

    def do_race(self, user: str, rng: random.Random) -> None:
        rid, url = self._confirmed(user, rng)
        if rid:
            other = threading.Thread(target=self.click, args=(msg.RUN, rid, user, url))
            other.start()
            self.click(msg.RUN, rid, user, url)
            other.join()

    def do_cancel(self, user: str, rng: random.Random) -> None:
        rid, url = self._confirmed(user, rng)
        if rid:
            self.click(msg.CANCEL, rid, user, url)
            self.wait_posts(url, 2)
            self.click(msg.RUN, rid, user, url)  # the dead Run button
            self._late_answer(url, 3, "cancelled")

    def do_expire(self, user: str, rng: random.Random) -> None:
        rid, url = self._confirmed(user, rng)
        if rid:
            with self.engine.begin() as c:  # ten minutes pass for this request alone
                c.execute(sa.text("UPDATE buildbot_requests SET expires_at = 0 "
                                  "WHERE id = :id AND state = 'pending'"), {"id": rid})
            self.click(msg.RUN, rid, user, url)
            self._late_answer(url, 2, "expired")

    def _late_answer(self, url: str, n: int, word: str) -> None:
        posts = self.wait_posts(url, n)
        with self.tally.lock:
            self.tally.late_clicks += 1
            if any(word in p.get("text", "") for p in posts[1:]):
                self.tally.late_clicks_answered += 1

    def do_abandon(self, user: str, rng: random.Random) -> None:
        rid, url = self._confirmed(user, rng)
        if rid:
            with self.tally.lock:
                self.tally.abandoned.append((rid, url))

    def do_invalid(self, user: str, rng: random.Random) -> None:
        resp, _url = self.command(rng.choice(INVALID), user)
        if resp.status_code == 200 and resp.content:
            text = resp.json().get("text", "")
            if "Nothing was started" not in text:
                with self.tally.lock:
                    self.tally.bad_acks.append(f"invalid command answered: {text[:80]}")

    def do_help(self, user: str, rng: random.Random) -> None:
        self.command(rng.choice(["", "help", "list"]), user)

    def do_direct(self, user: str, rng: random.Random) -> None:
        self.command(f"docs lang={rng.choice(['en', 'de', 'fr'])}", user)


def _run_value(body: dict[str, Any]) -> str | None:
    for block in body.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                if element.get("action_id") == msg.RUN:
                    return str(element.get("value"))
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The bot's RSS every ``every`` seconds while the load runs."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.is_set():
            try:
                self.samples.append((time.monotonic() - start, _rss_kib(self.pid)))
            except OSError:
                return
            self.done.wait(self.every)


def start_bot(args: argparse.Namespace, slack: FakeSlack, codearts: FakeCodeArts,
              workdir: Path, db_url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    config = workdir / "buildbot.toml"
    config.write_text(CONFIG)
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "CODEARTS_", "IAM_", "CLOUD_SDK_"))}
    env.update({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": slack.api_url, "CODEARTS_ENDPOINT": codearts.url,
                "CODEARTS_TOKEN": FakeCodeArts.token, "BUILDBOT_CONFIG": str(config),
                "DATABASE_URL": db_url, "PORT": str(port), "BUILD_POLL_SECONDS": "1",
                "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)})
    log_path = workdir / "bot.log"
    proc = subprocess.Popen([sys.executable, "-m", "bot"], env=env, cwd=ROOT,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the bot exited at start:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url, log_path
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the bot did not answer /healthz within 30 s")


def settle(soak: Soak, timeout: float = 60.0) -> None:
    """Wait until nothing is being sent any more: no request mid-flight, no new posts."""
    deadline = time.monotonic() + timeout
    last = (-1, -1)
    while time.monotonic() < deadline:
        with soak.engine.connect() as c:
            running = c.execute(sa.text("SELECT count(*) FROM buildbot_requests "
                                        "WHERE state = 'running'")).scalar_one()
        now = (len(soak.codearts.requests), len(soak.slack.all_calls()))
        if running == 0 and now == last:
            return
        last = now
        time.sleep(1.0)


def expire_abandoned(soak: Soak, timeout: float = 30.0) -> int:
    """Move the unanswered confirmations past their time; count those the bot then expired
    with a message at their response_url (its watcher does that on its own)."""
    ids = [rid for rid, _url in soak.tally.abandoned]
    if ids:
        with soak.engine.begin() as c:
            c.execute(sa.text("UPDATE buildbot_requests SET expires_at = 0 WHERE id IN :ids")
                      .bindparams(sa.bindparam("ids", expanding=True)), {"ids": ids})
    deadline = time.monotonic() + timeout
    told = 0
    while time.monotonic() < deadline:
        told = sum(1 for _rid, url in soak.tally.abandoned
                   if any("expired" in p.get("text", "") for p in soak.slack.responses(url)))
        if told == len(ids):
            break
        time.sleep(0.25)
    return told


def figures(soak: Soak, sampler: Sampler, elapsed: float, told_expired: int) -> dict[str, Any]:
    t = soak.tally
    per_url = [sum(1 for p in soak.slack.responses(url) if _run_value(p)) for url in t.confirm_urls]
    with soak.engine.connect() as c:
        states: dict[str, int] = dict(c.execute(sa.text(
            "SELECT state, count(*) FROM buildbot_requests GROUP BY state")).all())
        builds_rows = c.execute(sa.text("SELECT count(*) FROM buildbot_builds")).scalar_one()
    claimed = sum(n for s, n in states.items() if s not in ("pending", "cancelled", "expired"))
    runs_sent = len(soak.codearts.requests_to("/v3/jobs/build"))
    fake_builds = len(soak.codearts.builds(BACKEND_ID)) + len(soak.codearts.builds(DOCS_ID))
    rss = [kib for _t, kib in sampler.samples]
    quarter = max(1, len(rss) // 4)
    first, last = mean(rss[:quarter]) / 1024, mean(rss[-quarter:]) / 1024
    acks = sorted(t.ack_ms)

    def pct(p: float) -> float:
        return round(acks[min(len(acks) - 1, int(p / 100 * len(acks)))], 1) if acks else 0.0

    results = sum(1 for c in soak.slack.calls("chat.postMessage") if c.get("thread_ts"))
    data: dict[str, Any] = {
        "ops": soak.args.ops, "users": soak.args.users, "seconds": round(elapsed, 1),
        "requests_sent": len(acks), "scenarios": dict(t.scenarios),
        "non_200_acks": len(t.bad_acks), "bad_ack_examples": t.bad_acks[:5],
        "ack_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99),
                   "max": round(acks[-1], 1) if acks else 0.0},
        "valid_confirming_commands": len(per_url),
        "confirmations_lost": sum(1 for n in per_url if n == 0),
        "confirmations_duplicated": sum(1 for n in per_url if n > 1),
        "runs_sent": runs_sent, "requests_claimed": claimed, "builds_recorded": builds_rows,
        "builds_at_codearts": fake_builds, "builds_expected": t.expected_builds,
        "request_states": states, "results_in_thread": results,
        "late_clicks": t.late_clicks, "late_clicks_answered": t.late_clicks_answered,
        "abandoned": len(t.abandoned), "abandoned_told_expired": told_expired,
        "rss_mib": {"first_quarter": round(first, 1), "last_quarter": round(last, 1),
                    "growth": round(last - first, 1), "max": round(max(rss) / 1024, 1),
                    "samples": len(rss),
                    "deciles": [round(rss[min(len(rss) - 1, i * len(rss) // 10)] / 1024, 1)
                                for i in range(11)]},
    }
    data["checks"] = {
        "no_lost_confirmation": data["confirmations_lost"] == 0
        and data["confirmations_duplicated"] == 0,
        "no_duplicate_build": runs_sent == claimed == builds_rows == fake_builds
        == t.expected_builds,
        "late_clicks_refused": t.late_clicks_answered == t.late_clicks,
        "abandoned_expired": told_expired == len(t.abandoned),
        "all_acks_200": not t.bad_acks,
        "memory_flat": last - first <= max(8.0, 0.10 * first),
    }
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="requests to send in all")
    parser.add_argument("--users", type=int, default=20, help="concurrent users")
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    # a SIGTERM to the soak unwinds through the finally blocks, which stop the bot too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, FakeSlack() as slack, \
            FakeCodeArts() as codearts:
        workdir = Path(tmp)
        for job in (BACKEND_ID, DOCS_ID):
            codearts.add_job(job)
        db_url = args.database_url or f"sqlite:///{workdir / 'buildbot.db'}"
        schema = None
        if db_url.startswith(("postgresql", "postgres")):
            base_url = db_url
            db_url, schema = _own_schema(base_url)
        proc, url, log_path = start_bot(args, slack, codearts, workdir, db_url)
        engine = sa.create_engine(engine_url(db_url))
        soak = Soak(args, slack, codearts, url, engine)
        sampler = Sampler(proc.pid)
        sampler.start()
        started = time.monotonic()
        try:
            users = [threading.Thread(target=soak.user_loop, args=(f"USOAK{i:03d}", args.seed + i))
                     for i in range(args.users)]
            for u in users:
                u.start()
            for u in users:
                u.join()
            settle(soak)
            elapsed = time.monotonic() - started
            told = expire_abandoned(soak)
            sampler.done.set()
            sampler.join()
            data = figures(soak, sampler, elapsed, told)
            data["bot_alive"] = proc.poll() is None
            data["checks"]["bot_alive"] = data["bot_alive"]
        finally:
            sampler.done.set()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            soak.sender.close()
            engine.dispose()
            if schema:
                _drop_schema(base_url, schema)
        tracebacks = log_path.read_text(errors="replace").count("Traceback")
        data["tracebacks_in_bot_log"] = tracebacks
        data["checks"]["no_traceback_in_log"] = tracebacks == 0
    data["database"] = db_url.split(":", 1)[0]
    data["ok"] = all(data["checks"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    report(data, args.out)
    return 0 if data["ok"] else 1


def _own_schema(db_url: str) -> tuple[str, str]:
    """A fresh PostgreSQL schema for this run (its counts are this run's alone): (url, name)."""
    import uuid

    schema = "soak_" + uuid.uuid4().hex[:10]
    engine = sa.create_engine(engine_url(db_url))
    with engine.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in db_url else "?"
    return f"{db_url}{sep}options=-csearch_path%3D{schema}", schema


def _drop_schema(db_url: str, schema: str) -> None:
    engine = sa.create_engine(engine_url(db_url))
    with engine.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def report(d: dict[str, Any], out: Path) -> None:
    print(f"soak: {d['requests_sent']} requests from {d['users']} users in {d['seconds']} s "
          f"({d['database']})")
    print(f"  scenarios            {d['scenarios']}")
    print(f"  ack ms               p50 {d['ack_ms']['p50']}  p95 {d['ack_ms']['p95']}  "
          f"p99 {d['ack_ms']['p99']}  max {d['ack_ms']['max']}  (non-200: {d['non_200_acks']})")
    print(f"  confirmations        {d['valid_confirming_commands']} valid commands, "
          f"{d['confirmations_lost']} lost, {d['confirmations_duplicated']} duplicated")
    print(f"  builds               runs sent {d['runs_sent']}, claimed {d['requests_claimed']}, "
          f"recorded {d['builds_recorded']}, at CodeArts {d['builds_at_codearts']}, "
          f"expected {d['builds_expected']}; results in thread {d['results_in_thread']}")
    print(f"  late clicks          {d['late_clicks_answered']}/{d['late_clicks']} refused with "
          f"a reason; abandoned expired {d['abandoned_told_expired']}/{d['abandoned']}")
    r = d["rss_mib"]
    print(f"  bot RSS MiB          first quarter {r['first_quarter']}, last quarter "
          f"{r['last_quarter']} (growth {r['growth']}), max {r['max']}, {r['samples']} samples")
    print(f"  RSS over the run     {' '.join(str(v) for v in r['deciles'])}")
    print(f"  tracebacks in log    {d['tracebacks_in_bot_log']}")
    failed = [k for k, v in d["checks"].items() if not v]
    print("  result               " + ("OK" if not failed else "FAILED: " + ", ".join(failed)))
    print(f"  written to           {out}")


if __name__ == "__main__":
    sys.exit(main())
