"""The stand-ins live in the package for the demo, the tests and the benchmarks, but the
production path (``python -m bot`` / ``run``) never imports them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the only modules of the package allowed to import the stand-ins
ALLOWED = {"bot/demo.py", "bot/demo_screen.py"}  # the demo and how it prints Slack


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_production_module_imports_the_standins() -> None:
    offenders = []
    for path in sorted((ROOT / "bot").glob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        if any(n == "bot.standins" or n.startswith("bot.standins.") for n in _imports(path)):
            offenders.append(rel)
    assert offenders == []


def test_the_production_path_loads_without_the_standins() -> None:
    code = ("import sys, bot.__main__, bot.cli, bot.runtime, bot.web, bot.settings\n"
            "print(sorted(m for m in sys.modules if m.startswith('bot.standins')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True,
                         capture_output=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_the_old_test_imports_still_work() -> None:
    from bot.standins.codearts import FakeCodeArts
    from bot.standins.slack import FakeSlack
    from bot.standins.slack_requests import SlackSender
    from tests.fakes.codearts import IAM_PATH, RUN_PATH
    from tests.fakes.codearts import FakeCodeArts as Old
    from tests.fakes.slack import Call
    from tests.fakes.slack import FakeSlack as OldSlack
    from tests.slack_requests import SlackSender as OldSender

    assert Old is FakeCodeArts and OldSlack is FakeSlack and OldSender is SlackSender
    assert IAM_PATH == "/v3/auth/tokens" and RUN_PATH == "/v3/jobs/build" and Call
