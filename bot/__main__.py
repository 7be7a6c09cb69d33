"""``python -m bot``: run the bot (``run``, the default), or ``demo``, ``check-config``,
``explain`` (see ``bot.cli``); ``-h`` for usage, ``--version``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from bot import cli
from bot.config import BuildbotConfig, ConfigError, load_config
from bot.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("bot")

DESCRIPTION = ("buildbot: run Huawei Cloud CodeArts Build tasks from Slack and follow them in "
               "a thread.")
EPILOG = """\
With no command, buildbot runs (the same as `run`): in Socket Mode when SLACK_APP_TOKEN is
set, else in HTTP mode on PORT. Its settings come from the environment (README.md lists them);
try it first with no settings at all: python -m bot demo"""
RUN = ("Run the bot: Socket Mode when SLACK_APP_TOKEN is set, otherwise HTTP mode on PORT "
       "(the default command).")


def version() -> str:
    try:
        return metadata.version("buildbot")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"buildbot {version()}")
    # --config before the command (or with none) is the same as after it
    cli.add_config_argument(parser, dest="top_config")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    run = commands.add_parser("run", help=RUN, description=RUN)
    cli.add_config_argument(run)
    demo = commands.add_parser("demo", help=cli.DEMO, description=cli.DEMO)
    cli.add_demo_arguments(demo)
    check = commands.add_parser("check-config", help=cli.CHECK_CONFIG,
                                description=cli.CHECK_CONFIG)
    cli.add_check_config_arguments(check)
    explain = commands.add_parser("explain", help=cli.EXPLAIN, description=cli.EXPLAIN)
    cli.add_explain_arguments(explain)
    return parser


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level`` (``Settings.log_level``, already checked)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs full URLs at INFO; ours already logs one line per request
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or bad usage (2): nothing started
        return exc.code if isinstance(exc.code, int) else 2
    args.config = getattr(args, "config", None) or args.top_config
    command = args.command or "run"
    if command == "check-config":
        return cli.run_check_config(args)
    if command == "explain":
        return cli.run_explain(args)
    if command == "demo":
        from bot import demo  # the stand-ins are imported for the demo only

        return demo.run(args)
    return run(args)


def cannot_start(problems: list[str]) -> int:
    """Every start-up problem in one message on stderr, one line each; exit code 2."""
    print("buildbot cannot start:\n" + "\n".join(f"  - {p}" for p in problems),
          file=sys.stderr)
    return 2


def load(config_arg: str | None) -> tuple[Settings | None, BuildbotConfig | None, str,
                                          list[str]]:
    """The settings and the jobs file, with every problem of both at once."""
    problems: list[str] = []
    settings: Settings | None = None
    config: BuildbotConfig | None = None
    try:
        settings = load_settings(**({"buildbot_config": Path(config_arg)} if config_arg else {}))
    except SettingsError as exc:
        problems += exc.problems
    path = str(settings.buildbot_config) if settings else cli.config_path(config_arg)
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems += exc.problems
    return settings, config, path, problems


def run(args: argparse.Namespace) -> int:
    """Run the bot. Every local check comes first; in HTTP mode the port (in Socket Mode the
    health port, HEALTH_PORT, when set) opens before Slack is asked to accept the token
    (``/readyz`` says "starting" meanwhile)."""
    settings, config, path, problems = load(args.config)
    if problems or settings is None or config is None:
        return cannot_start(problems)
    setup_logging(settings.log_level)
    for warning in cli.start_warnings(config, path):
        log.warning(warning)
    from bot.runtime import Runtime, StartError

    try:
        runtime = Runtime(settings, config, verify=False)
    except StartError as exc:
        return cannot_start([str(exc)])
    # SIGTERM (platform restarts) unwinds like Ctrl-C, so work already acknowledged
    # to Slack finishes before the process goes.
    signal.signal(signal.SIGTERM, _terminate)
    return _serve(runtime, settings)


def _serve(runtime: Runtime, settings: Settings) -> int:
    """Serve in the mode the settings choose until stopped, then close the runtime; a
    problem that keeps it from starting is said as ``cannot_start`` says it."""
    from slack_sdk.errors import SlackApiError

    from bot.runtime import StartError

    serve = _serve_socket_mode if settings.socket_mode else _serve_http
    try:
        refused = serve(runtime, settings)
        if refused:
            return cannot_start([refused])
    except StartError as exc:
        return cannot_start([str(exc)])
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        return cannot_start([f"Slack refused SLACK_APP_TOKEN ({error}): create an app-level "
                             "token with connections:write, or unset it for HTTP mode."])
    except (KeyboardInterrupt, SystemExit):
        log.info("stopping: finishing acknowledged work")
    finally:
        runtime.close()
    return 0


def _serve_socket_mode(runtime: Runtime, settings: Settings) -> str | None:
    """Socket Mode (and the health port, when set) until stopped; or why the health port
    cannot be opened."""
    log.info("starting in Socket Mode")
    if settings.health_port is not None:
        try:
            runtime.bind_health()
        except OSError as exc:
            return (f"cannot listen on HEALTH_PORT {settings.health_port} "
                    f"({exc.strerror or exc}): set HEALTH_PORT to a free port.")
    runtime.serve_socket_mode()
    return None


def _serve_http(runtime: Runtime, settings: Settings) -> str | None:
    """HTTP mode on PORT until stopped; or why the port cannot be opened."""
    log.info("starting in HTTP mode on port %s", settings.port)
    try:
        runtime.bind_http()
    except OSError as exc:
        return (f"cannot listen on PORT {settings.port} "
                f"({exc.strerror or exc}): set PORT to a free port.")
    runtime.serve_http()
    return None


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
