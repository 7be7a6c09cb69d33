"""Time to the user: how long each step of ``/build`` -> Run -> channel message takes
when 50 users act at the same moment, timed at the stand-ins' arrival stamps.

    python -m bench.time_to_user            # 10 rounds of 50 users
    python -m bench.time_to_user --quick    # 3 rounds

Each round: 50 users send ``/build backend codeBranch=<own> commit=abc1234`` at
once (one connection each, from the load-generator process); when all 50
confirmations have arrived at their ``response_url``, the 50 users click Run at
once. Steps, all on ``time.monotonic()`` (one clock for every process):

1. command -> confirmation: from the command's send to its confirmation
   arriving at the Slack stand-in's ``response_url``;
2. Run click -> CodeArts: from the click's send to the run request arriving at
   the CodeArts stand-in;
3. CodeArts answer -> channel message: from the moment the CodeArts stand-in
   has its answer ready (its handler returned; it answers at once, no added
   latency) to ``chat.postMessage`` arriving at the Slack stand-in.

The bot runs in its own process as ``python -m bot`` builds it (watcher on,
production defaults, SQLite, INFO logging to a file); the stand-ins run in this
process. Target: p99 under 50 ms for each step.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench._common import (
    BACKEND_ID,
    USERS,
    Child,
    LoadGen,
    bot_values,
    click_body,
    command_body,
    config_text,
    median,
    pct,
    pin_cores,
    quiet_logging,
    serve_ours,
    table,
    widen_backlog,
    write_results,
)
from bot import messages as msg
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import Call, FakeSlack
from tests.harness import run_value

TARGET_MS = 50.0
STEPS = ("command_to_confirmation", "click_to_codearts", "codearts_to_channel")
_MENTION = re.compile(r"<@(\w+)>")


class AnswerTimes:
    """Wraps FakeCodeArts.handle to note when each run answer was ready, by codeBranch."""

    def __init__(self, fake: FakeCodeArts) -> None:
        self.at: dict[str, float] = {}
        self._lock = threading.Lock()
        inner = fake.handle

        def handle(req: Any) -> Any:
            answer = inner(req)
            if req.path == "/v3/jobs/build" and isinstance(req.body, dict):
                branch = {p["name"]: p["value"] for p in req.body.get("parameter", [])}
                with self._lock:
                    self.at[branch.get("codeBranch", "")] = time.monotonic()
            return answer

        fake.handle = handle  # type: ignore[method-assign]


def wait_until(what: str, predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def one_round(r: int, users: list[str], slack: FakeSlack, codearts: FakeCodeArts,
              answers: AnswerTimes, bot: Child, load: LoadGen) -> dict[str, list[float]]:
    urls = {u: slack.response_url() for u in users}
    branch = {u: f"r{r}-{u}" for u in users}
    paths = {urlsplit(url).path: u for u, url in urls.items()}
    seen = len(slack.all_calls())
    cmds = [command_body(f"backend codeBranch={branch[u]} commit=abc1234", user=u,
                         response_url=urls[u]) for u in users]
    sent = load.burst(bot.hello[0], cmds)
    bad = [s for *_t, s in sent if s != 200]

    def confirmations() -> dict[str, Call] | None:
        got = {paths[c.path]: c for c in slack.all_calls()[seen:]
               if c.method == "response_url" and c.path in paths}
        return got if len(got) == len(users) else None

    conf = wait_until("confirmations", confirmations)
    step1 = [(conf[u].at - sent[i][0]) * 1000 for i, u in enumerate(users)]

    seen = len(slack.all_calls())
    clicks = [click_body(msg.RUN, run_value(conf[u].params), user=u, response_url=urls[u])
              for u in users]
    clicked = load.burst(bot.hello[0], clicks)
    bad += [s for *_t, s in clicked if s != 200]

    def posts() -> dict[str, Call] | None:
        got = {}
        for c in slack.all_calls()[seen:]:
            if c.method == "chat.postMessage" and (m := _MENTION.search(c.params.get("text", ""))):
                got[m.group(1)] = c
        return got if len(got) == len(users) else None

    posted = wait_until("channel messages", posts)
    runs = {_branch(q.body): q for q in codearts.requests_to("/v3/jobs/build", "POST")}
    step2 = [(runs[branch[u]].time - clicked[i][0]) * 1000 for i, u in enumerate(users)]
    step3 = [(posted[u].at - answers.at[branch[u]]) * 1000 for u in users]
    bot.ask("idle")
    if bad:
        print(f"round {r}: {len(bad)} requests not answered 200: {bad[:5]}")
    return {"command_to_confirmation": step1, "click_to_codearts": step2,
            "codearts_to_channel": step3, "failed": [float(len(bad))]}


def _branch(body: Any) -> str:
    params = {p["name"]: p["value"] for p in (body or {}).get("parameter", [])}
    return str(params.get("codeBranch", ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--bot-path", help="folder with a patched copy of the bot package to run")
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 10)
    users = USERS[: args.users]
    quiet_logging()
    pinning = pin_cores(not args.no_pin)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ttu-"))
    (tmp / "buildbot.toml").write_text(config_text())
    with FakeSlack() as slack, FakeCodeArts(build_duration=3600) as codearts:
        codearts.add_job(BACKEND_ID)
        slack.usergroups["SDEVS"] = []
        widen_backlog(slack, codearts)
        answers = AnswerTimes(codearts)
        values = bot_values(slack_api_url=slack.api_url, codearts_url=codearts.url,
                            db_url=f"sqlite:///{tmp / 'buildbot.db'}", config=tmp / "buildbot.toml")
        bot = Child(serve_ours, values, str(tmp / "bot.log"), True, args.bot_path, server=True)
        load = LoadGen()
        try:
            one_round(0, users[:10], slack, codearts, answers, bot, load)  # warm-up
            per_round = []
            for r in range(1, rounds + 1):
                res = one_round(r, users, slack, codearts, answers, bot, load)
                per_round.append(res)
                print(f"round {r}: " + "  ".join(
                    f"{s} p50 {pct(res[s], 50):.1f} p99 {pct(res[s], 99):.1f} ms" for s in STEPS),
                    flush=True)
        finally:
            load.close()
            bot.close()
    report(per_round, users=len(users), log=str(tmp / "bot.log"), bot_path=args.bot_path,
           pinning=pinning, quick=args.quick)
    return 0


def report(per_round: list[dict[str, list[float]]], **meta: Any) -> None:
    rows, summary = [], {}
    for s in STEPS:
        pooled = [v for r in per_round for v in r[s]]
        fig = {"p50_ms": pct(pooled, 50), "p90_ms": pct(pooled, 90), "p99_ms": pct(pooled, 99),
               "max_ms": max(pooled),
               "round_p50_median_ms": median([pct(r[s], 50) for r in per_round]),
               "round_p99_median_ms": median([pct(r[s], 99) for r in per_round]),
               "samples": len(pooled)}
        fig["met"] = fig["p99_ms"] < TARGET_MS
        summary[s] = fig
        rows.append([s, fig["samples"], fig["p50_ms"], fig["p90_ms"], fig["p99_ms"], fig["max_ms"],
                     fig["round_p99_median_ms"], "yes" if fig["met"] else "NO"])
    failed = int(sum(r["failed"][0] for r in per_round))
    print()
    print(meta["pinning"])
    print(f"{meta['users']} concurrent users, {len(per_round)} rounds; failed requests: {failed}")
    print(table(["step", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "median round p99",
                 f"p99 < {TARGET_MS:.0f} ms"], rows))
    name = "time_to_user" + ("-patched" if meta.get("bot_path") else "") + (
        "-quick" if meta["quick"] else "")
    path = write_results(name, {"target_p99_ms": TARGET_MS, "failed": failed,
                                          "summary": summary, "rounds": per_round, **meta})
    print(f"written {path}")


if __name__ == "__main__":
    raise SystemExit(main())
