"""Start-up: from ``python -m bot`` to ``/healthz`` answering 200.

    python -m bench.startup             # 7 runs of each
    python -m bench.startup --quick     # 3 runs

Each run starts ``python -m bot`` as a subprocess with its environment pointing
at the Slack and CodeArts stand-ins (running in this process), a fresh SQLite
file in a temporary folder and a free port, then asks ``GET /healthz`` every
5 ms until it answers 200, and stops the bot with SIGTERM. For reference, the
same number of runs of ``python -c pass`` (the interpreter alone) and
``python -c "import bot.runtime"`` (the bot's imports) are interleaved with
them, so the three are measured under the same load. Figures: median and
spread of each, to stdout and bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    BACKEND_ID,
    ROOT,
    bot_env,
    bot_values,
    config_text,
    median,
    quiet_logging,
    table,
    write_results,
)
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_bot(values: dict[str, Any], log: Path) -> float:
    """Seconds from spawning ``python -m bot`` to /healthz answering 200."""
    port = free_port()
    with log.open("w") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "bot"], cwd=ROOT,
                                env=bot_env(values, port), stdout=out, stderr=out)
        try:
            while not healthy(port):
                if proc.poll() is not None:
                    raise SystemExit(f"the bot exited with {proc.returncode}; see {log}")
                if time.monotonic() - t0 > 60:
                    raise SystemExit(f"no /healthz after 60 s; see {log}")
                time.sleep(0.005)
            return time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_python(code: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 runs")
    ap.add_argument("--runs", type=int)
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    quiet_logging()
    tmp = Path(tempfile.mkdtemp(prefix="bench-start-"))
    (tmp / "buildbot.toml").write_text(config_text())
    times: dict[str, list[float]] = {"python -c pass": [], "import bot.runtime": [],
                                     "python -m bot -> /healthz 200": []}
    with FakeSlack() as slack, FakeCodeArts() as codearts:
        codearts.add_job(BACKEND_ID)
        for i in range(runs):
            times["python -c pass"].append(run_python("pass"))
            times["import bot.runtime"].append(run_python("import bot.runtime"))
            values = bot_values(slack_api_url=slack.api_url, codearts_url=codearts.url,
                                db_url=f"sqlite:///{tmp / f'start-{i}.db'}",
                                config=tmp / "buildbot.toml")
            took = start_bot(values, tmp / f"start-{i}.log")
            times["python -m bot -> /healthz 200"].append(took)
            print(f"run {i + 1}: {took * 1000:.0f} ms", flush=True)
    summary = {k: {"median_ms": median(v) * 1000, "min_ms": min(v) * 1000,
                   "max_ms": max(v) * 1000, "runs_ms": [x * 1000 for x in v]}
               for k, v in times.items()}
    print()
    print(table(["what", "runs", "median ms", "min ms", "max ms"],
                [[k, len(times[k]), s["median_ms"], s["min_ms"], s["max_ms"]]
                 for k, s in summary.items()]))
    path = write_results("startup-quick" if args.quick else "startup",
                         {"summary": summary, "runs": runs})
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
