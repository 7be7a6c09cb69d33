"""Shared pieces of the benchmarks: the bot and the baseline app in child processes,
a load generator in its own process, percentiles, tables and the results folder.

Processes are started with the ``spawn`` method so a child never inherits the
stand-ins' server threads. Times that cross processes are ``time.monotonic()``
(CLOCK_MONOTONIC, the same clock in every process on Linux), which is what the
stand-ins stamp on arrival.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:  # so `python bench/x.py` finds bot and tests too
    sys.path.insert(0, str(ROOT))

SECRET = "bench-signing-secret-0123456789"
BOT_TOKEN = "xoxb-bench-bot-token"
BACKEND_ID = "f9d6c8466d614a9788e9a0acf6c15f46"
CHANNEL = "CBUILDS"
USERS = [f"UBENCH{i:03d}" for i in range(200)]
SPAWN = mp.get_context("spawn")


def config_text(users: Sequence[str] = USERS) -> str:
    """The jobs file: one confirmed job the bench users may run by ``users`` (no group lookups)."""
    listed = ", ".join(f'"{u}"' for u in users)
    return f"""
admins = ["UADMIN"]

[jobs.backend]
id = "{BACKEND_ID}"
description = "Backend CI"
users = [{listed}]
usergroups = ["SDEVS"]
channels = ["{CHANNEL}"]

[jobs.backend.params.codeBranch]
default = "master"
pattern = '^[A-Za-z0-9._/-]+$'

[jobs.backend.params.target]
choices = ["staging", "prod"]
default = "staging"
"""


def bot_values(*, slack_api_url: str, codearts_url: str, db_url: str, config: Path,
               **extra: Any) -> dict[str, Any]:
    """Settings for the bot under test: the stand-ins, a fixed token, production defaults."""
    from tests.fakes.codearts import FakeCodeArts

    values: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN, "slack_signing_secret": SECRET,
        "slack_api_url": slack_api_url,
        "codearts_endpoint": codearts_url, "codearts_token": FakeCodeArts.token,
        "database_url": db_url, "buildbot_config": config}
    values.update(extra)
    return values


def bot_env(values: dict[str, Any], port: int) -> dict[str, str]:
    """The same settings as environment variables, for ``python -m bot``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CODEARTS_"))}
    env.update({k.upper(): str(v) for k, v in values.items()})
    env["PORT"] = str(port)
    env["PYTHONPATH"] = str(ROOT)
    return env


def widen_backlog(*fakes: Any) -> None:
    """Let the stand-ins queue 128 pending connections instead of socketserver's 5.

    With 5, a burst of connections overflows the accept queue and the kernel retries
    the SYN a second later (or resets), which would be charged to the bot. Calling
    listen() again on a listening socket only changes its backlog (Linux).
    """
    for fake in fakes:
        fake._server.socket.listen(128)


def log_to_file(path: str) -> None:
    """Send this process's stderr to a file, then set logging up as ``python -m bot`` does."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    from bot.__main__ import setup_logging

    setup_logging()


def cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def proc_status_kib(field: str) -> int:
    """A ``/proc/self/status`` field such as VmRSS or VmHWM, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- servers


def _serve_loop(conn: Connection, idle: Callable[[float], bool]) -> None:
    """Answer the parent: ``idle`` (wait for work after acks), ``cpu``, ``stop``."""
    while True:
        cmd = conn.recv()
        if cmd == "idle":
            conn.send(idle(120.0))
        elif cmd == "cpu":
            conn.send(cpu_seconds())
        elif cmd == "stop":
            return


def serve_ours(conn: Connection, values: dict[str, Any], log_path: str, watch: bool,
               bot_path: str | None = None) -> None:
    """Child process: the bot's HTTP endpoint exactly as ``python -m bot`` builds it.

    ``bot_path``: a folder holding a patched copy of the ``bot`` package, imported instead
    of the checkout's (to measure a proposed fix before it is applied).
    """
    if bot_path:
        sys.path.insert(0, bot_path)
    log_to_file(log_path)
    from bot.config import load_config
    from bot.runtime import Runtime
    from bot.settings import load_settings

    settings = load_settings(**values)
    runtime = Runtime(settings, load_config(settings.buildbot_config), watch=watch)
    port = runtime.bind_http(host="127.0.0.1", port=0)
    threading.Thread(target=runtime.server.run, daemon=True).start()
    conn.send((port, runtime.server.adj.threads))
    try:
        _serve_loop(conn, runtime.flow.wait_idle)
    finally:
        runtime.close()


def serve_baseline(conn: Connection, slack_api_url: str, threads: int, log_path: str) -> None:
    """Child process: the smallest Bolt app that acks /build, served by waitress the same way."""
    log_to_file(log_path)
    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from slack_sdk import WebClient
    from waitress.server import create_server  # type: ignore[import-untyped]

    # process_before_response=True as in bot.slack_app, so both ack on the request thread.
    app = App(client=WebClient(token=BOT_TOKEN, base_url=slack_api_url), signing_secret=SECRET,
              process_before_response=True)

    @app.command("/build")
    def build(ack: Any) -> None:
        ack()

    # The same waitress options as bot.web.make_server, so only the app differs.
    server = create_server(SlackRequestHandler(app), host="127.0.0.1", port=0, threads=threads,
                           connection_limit=1000, channel_timeout=30, ident="baseline",
                           clear_untrusted_proxy_headers=True)
    threading.Thread(target=server.run, daemon=True).start()
    conn.send((int(server.effective_port), threads))
    try:
        _serve_loop(conn, lambda _timeout: True)
    finally:
        server.close()


SERVER_CPUS: set[int] | None = None  # set by pin_cores()


def pin_cores(enabled: bool = True) -> str:
    """Give the process under test core 0 to itself; this process (stand-ins, and the
    children it starts unpinned, e.g. the load generator) keeps to the other cores.

    Call before starting the stand-ins, so their threads inherit the affinity.
    """
    global SERVER_CPUS
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        SERVER_CPUS = None
        return "not pinned"
    SERVER_CPUS = {cpus[0]}
    os.sched_setaffinity(0, set(cpus[1:]))
    return f"server under test on core {cpus[0]}; load generator and stand-ins on {cpus[1:]}"


class Child:
    """A child process with a pipe; ``ask`` sends a command and waits for the answer.

    ``server=True`` starts it on the core(s) ``pin_cores`` reserved for the process
    under test (a spawned process inherits the affinity of the thread that starts it).
    """

    def __init__(self, target: Callable[..., None], *args: Any, server: bool = False) -> None:
        self.conn, child_conn = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=target, args=(child_conn, *args), daemon=True)
        before = os.sched_getaffinity(0)
        if server and SERVER_CPUS:
            os.sched_setaffinity(0, SERVER_CPUS)
        try:
            self.proc.start()
        finally:
            os.sched_setaffinity(0, before)
        child_conn.close()  # so recv() raises EOFError if the child dies
        self.hello = self.conn.recv()

    def ask(self, cmd: Any) -> Any:
        self.conn.send(cmd)
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send("stop")
        except OSError:
            pass
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# --------------------------------------------------------------------------- requests

_TRIGGER = itertools.count(1)


def command_body(text: str, *, user: str, response_url: str, channel: str = CHANNEL) -> bytes:
    """A slash-command payload with its own ``trigger_id``, as Slack sends it.

    Every body must differ: the bot refuses a request whose signature it has
    already seen (bot/replay.py), and two identical bodies signed in the same
    second have the same signature.
    """
    return urlencode({
        "token": "legacy-unused", "team_id": "T1", "team_domain": "example",
        "channel_id": channel, "channel_name": "builds", "user_id": user,
        "user_name": user.lower(), "command": "/build", "text": text, "api_app_id": "A1",
        "response_url": response_url, "trigger_id": f"{os.getpid()}.{next(_TRIGGER)}.bench",
    }).encode()


def click_body(action_id: str, value: str, *, user: str, response_url: str,
               channel: str = CHANNEL) -> bytes:
    """A block_actions payload for one button click (unique ``trigger_id``, see above)."""
    payload = {
        "type": "block_actions", "team": {"id": "T1", "domain": "example"},
        "user": {"id": user, "username": user.lower(), "team_id": "T1"},
        "api_app_id": "A1", "token": "legacy-unused",
        "trigger_id": f"{os.getpid()}.{next(_TRIGGER)}.bench",
        "channel": {"id": channel, "name": "builds"},
        "container": {"type": "message", "is_ephemeral": True, "message_ts": "1.1",
                      "channel_id": channel},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                     "action_ts": str(time.time()),
                     "text": {"type": "plain_text", "text": action_id}}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


# --------------------------------------------------------------------------- load generator


def _request(host: str, port: int, body: bytes) -> bytes:
    """A signed /slack/events POST, signed now (Slack refuses stale timestamps; so does Bolt)."""
    from tests.slack_requests import signed_headers

    head = (f"POST /slack/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    head += "".join(f"{k}: {v}\r\n" for k, v in signed_headers(SECRET, body).items())
    return head.encode() + b"\r\n" + body


async def _send(host: str, port: int, body: bytes, timeout: float) -> tuple[float, float, int]:
    """One request on a fresh connection: (sent at, answered at, status; -1 = no answer)."""
    data = _request(host, port, body)
    t0 = time.monotonic()
    status = -1
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(data)
        raw = await asyncio.wait_for(reader.read(-1), timeout)
        writer.close()
        if raw.startswith(b"HTTP/"):
            status = int(raw.split(b" ", 2)[1])
    except (OSError, TimeoutError):
        pass
    return t0, time.monotonic(), status


async def _closed_loop(host: str, port: int, bodies: list[list[bytes]],
                       timeout: float) -> list[tuple[float, float, int]]:
    async def worker(mine: list[bytes]) -> list[tuple[float, float, int]]:
        return [await _send(host, port, b, timeout) for b in mine]

    per_worker = await asyncio.gather(*(worker(b) for b in bodies))
    return [r for rows in per_worker for r in rows]


async def _burst(host: str, port: int, bodies: list[bytes],
                 timeout: float) -> list[tuple[float, float, int]]:
    return list(await asyncio.gather(*(_send(host, port, b, timeout) for b in bodies)))


def _loadgen(conn: Connection) -> None:
    """Child process: runs each job it is sent on one asyncio loop, returns the timings."""
    conn.send("ready")
    while True:
        job = conn.recv()
        if job == "stop":
            return
        kind, host, port, bodies, timeout = job
        started = cpu_seconds()
        runner = _closed_loop if kind == "loop" else _burst
        rows = asyncio.run(runner(host, port, bodies, timeout))
        conn.send((rows, cpu_seconds() - started))


class LoadGen(Child):
    """The load generator in its own process, so its CPU is not counted as the server's."""

    def __init__(self) -> None:
        super().__init__(_loadgen)
        self.cpu = 0.0

    def closed_loop(self, port: int, bodies: list[list[bytes]],
                    timeout: float = 15.0) -> list[tuple[float, float, int]]:
        """One worker per list of bodies, each sending its bodies one after another."""
        rows, cpu = self.ask(("loop", "127.0.0.1", port, bodies, timeout))
        self.cpu += cpu
        return rows  # type: ignore[no-any-return]

    def burst(self, port: int, bodies: list[bytes],
              timeout: float = 15.0) -> list[tuple[float, float, int]]:
        """All bodies at once, each on its own connection; rows in the order of ``bodies``."""
        rows, cpu = self.ask(("burst", "127.0.0.1", port, bodies, timeout))
        self.cpu += cpu
        return rows  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- figures


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile, linear between closest ranks (NaN for no values)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return pct(values, 50)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table (numbers right-aligned)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for row, raw in zip(cells, rows, strict=True):
        out.append("  ".join(c.rjust(w) if isinstance(v, int | float) else c.ljust(w)
                             for c, w, v in zip(row, widths, raw, strict=True)))
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}"
    return str(v)


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


def quiet_logging() -> None:
    """The parent process (stand-ins, orchestration) logs warnings only."""
    logging.basicConfig(level=logging.WARNING)
