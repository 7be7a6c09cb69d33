"""``python -m bot``: run the bot, or ``check-config`` / ``explain`` (see ``bot.cli``)."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from bot.config import ConfigError, load_config
from bot.settings import SettingsError, load_settings

log = logging.getLogger("bot")


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level`` (``Settings.log_level``, already checked)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs full URLs at INFO; ours already logs one line per request
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "demo":
        from bot import demo

        return demo.main(args[1:])
    if args and args[0] in ("check-config", "explain"):
        from bot import cli

        return cli.check_config(args[1:]) if args[0] == "check-config" else cli.explain(args[1:])
    if args and args[0] in ("-h", "--help", "help"):
        print(__doc__)
        print("usage: python -m bot [check-config | explain --user U --channel C \"/build ...\"]")
        return 0
    try:
        settings = load_settings()
        config = load_config(settings.buildbot_config)
    except (SettingsError, ConfigError) as exc:
        problems = exc.problems
        print("buildbot cannot start:\n" + "\n".join(f"  - {p}" for p in problems),
              file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    from bot.runtime import Runtime, StartError

    try:
        runtime = Runtime(settings, config)
    except StartError as exc:
        print(f"buildbot cannot start:\n  - {exc}", file=sys.stderr)
        return 2
    from slack_sdk.errors import SlackApiError

    # SIGTERM (platform restarts) unwinds like Ctrl-C, so work already acknowledged
    # to Slack finishes before the process goes.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if settings.socket_mode:
            log.info("starting in Socket Mode")
            runtime.serve_socket_mode()
        else:
            log.info("starting in HTTP mode on port %s", settings.port)
            runtime.serve_http()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        print(f"buildbot cannot start:\n  - Slack refused SLACK_APP_TOKEN ({error}): create an "
              "app-level token with connections:write, or unset it for HTTP mode.",
              file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        log.info("stopping: finishing acknowledged work")
    finally:
        runtime.close()
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
