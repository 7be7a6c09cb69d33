"""``python -m bot demo``: the real bot in a terminal, with no Slack workspace and no cloud.

The bot is the production one (the same ``Runtime``: listeners, checks, store, Slack client,
CodeArts client and watcher), serving HTTP on a free loopback port, with a SQLite database
in a temporary folder and the example jobs file (``examples/buildbot.toml``, embedded here
as ``EXAMPLE_JOBS``). Slack's Web API and CodeArts Build are the loopback stand-ins of
``bot.standins``; nothing leaves the machine.

The terminal plays the Slack client. A line typed as ``/build ...`` goes to the bot as a
signed request, exactly as Slack sends it; everything the bot says comes back rendered as
text: who sees it (ephemeral, channel, thread, direct message), the text and blocks, and
the buttons numbered ``[1] Run  [2] Cancel``. Typing a number clicks. ``as bob`` and
``in #other`` switch user and channel, ``wait`` waits for builds to end, ``help`` lists it
all. ``--script FILE`` (or lines on a stdin that is not a terminal) runs lines and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from bot.config import BuildbotConfig, ConfigError, load_config
from bot.demo_screen import HOME_KEY, Button, DemoScreen, Origin
from bot.settings import Settings
from bot.standins.codearts import FakeCodeArts
from bot.standins.slack import FakeSlack
from bot.standins.slack_requests import (
    SlackSender,
    channel_submission_body,
    home_action_body,
    home_opened_body,
)

# The example jobs file, the same text as examples/buildbot.toml (a test checks they agree),
# so the demo works from an installed package too.
EXAMPLE_JOBS = """\
# buildbot's jobs and permissions. Copy this file to buildbot.toml (or point
# BUILDBOT_CONFIG / --config at it) and put your own IDs in:
#   Slack user IDs start with U, channel IDs with C, user-group IDs with S;
#   a job's id is its CodeArts build task ID (32 letters and digits).
# Check it with `python -m bot check-config`. `python -m bot demo` runs this very
# file against stand-ins (there, builds of e2e fail, to show a failure).

admins = ["U01ADMIN"]                       # may run every job, and raw 32-character job IDs

[jobs.backend]                              # the name typed after /build
id = "f9d6c8466d614a9788e9a0acf6c15f46"    # CodeArts build task ID
description = "Backend CI"
users = ["U01ALICE"]                        # Slack user IDs allowed to run it; ["*"] = everyone
usergroups = ["S01DEVS"]                    # Slack user groups whose members may run it
channels = ["C01BUILDS"]                    # channels it may be run from; absent = any

[jobs.backend.params.codeBranch]
default = "master"                          # sent when the user gives none
pattern = '^[A-Za-z0-9._/-]+$'              # the whole value must match

[jobs.backend.params.target]
choices = ["staging", "prod"]               # the only values accepted
default = "staging"

[jobs.e2e]
id = "3c5e8a1f0b2d4e6f8a9b0c1d2e3f4a5b"
description = "End-to-end tests"
users = ["*"]                               # everyone
channels = ["C01BUILDS"]

[jobs.docs]
id = "0123456789abcdef0123456789abcdef"
description = "Docs site"
users = ["*"]
confirm = false                             # starts at once, no Run/Cancel question
"""

POLL_SECONDS = 2.0  # how often the demo's watcher checks a running build
PEOPLE = {"alice": "U01ALICE", "bob": "U01BOB", "carol": "U01CAROL", "admin": "U01ADMIN"}
CHANNELS = {"builds": "C01BUILDS", "random": "C01RANDOM"}
GROUP_MEMBERS = {"S01DEVS": ["U01CAROL"]}  # carol may run backend through her user group
FAILING_JOBS = {"e2e"}  # the stand-in ends these jobs' builds with FAILURE
BUILD_SECONDS = {"backend": 4.0, "e2e": 3.0, "docs": 2.0}
DEFAULT_BUILD_SECONDS = 3.0
# the steps every stand-in build goes through, shown as live progress in its channel message
DEMO_STEPS = ("Checkout", "Compile", "Test", "Build image")


def _demo_outputs(name: str) -> dict[str, Any]:
    """What a demo job's successful builds produce (output-info's ``result``): a package
    and an image, as CodeArts lists them."""
    jar = {"name": f"{name}.tar.gz", "version": "1.4.2", "package_type": "generic",
           "uri": f"https://artifacts.example.com/{name}/1.4.2/{name}.tar.gz"}
    return {"package_info": jar, "package_infos": {jar["name"]: jar},
            "image_infos": {name: {"name": name, "version": "v1.4.2", "package_type": "docker",
                                   "uri": f"swr.example.com/team/{name}:v1.4.2"}}}


# the console's link to a build, as in the README: announcements link to it, and a pasted
# one is previewed (``paste``)
DEMO_LINK_TEMPLATE = ("https://devcloud.cn-north-4.huaweicloud.com/cloudbuild/job/{job_id}"
                      "/history/{build_no}")
WAIT_LIMIT = 120.0  # ``wait`` gives up after this many seconds
PEOPLE_NOTE = ("alice may run backend (she is in its users), carol through the user group "
               "S01DEVS, admin as an admin; bob is in no list. e2e and docs are for everyone; "
               "builds of e2e fail.")

HELP = """\
Type what you would type in Slack, or a demo command:
  /build ...        the slash command, as you, in the current channel
  1, 2, ...         click the button with that number
  click LABEL       click the newest button labelled LABEL (Run, Cancel, Stop, Rebuild)
  as NAME           act as someone else: alice, bob, carol, admin (or any name, or an ID U...)
  in #CHANNEL       type in another channel: #builds, #random, any #name (or an ID C...)
  pick JOB          pick a job in the open form (/build alone opens it)
  paste URL         post a message with a link, as you, in the current channel: a link to
                    a build (https://devcloud.cn-north-4.huaweicloud.com/cloudbuild/job/
                    <task ID>/history/<build number>) is previewed where it may be shown
  submit [F=V ...]  submit the open form, setting field F (its number or label) to V
  wait [SECONDS]    wait until every running build has ended and been reported
                    (or just SECONDS)
  home              open the app's Home tab: your builds, approvals, jobs to run
  who               who and where you are
  help              this list
  quit              end the demo (Ctrl-D too)
Lines starting with # are comments."""

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


# What may follow a demo command's first word (``Demo._words``).
WORDS, ANY, NOTHING = "words", "any", "nothing"


class _DemoSettings(Settings):
    """The demo's own values only: nothing is read from the environment or a .env file,
    so a shell set up for a real workspace cannot leak into the demo (or the reverse)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any,
                                   *others: Any, **named: Any) -> tuple[Any, ...]:
        return (init_settings,)


class Demo(DemoScreen):
    """The bot, the stand-ins and the terminal; ``with Demo(...) as demo: demo.line(...)``."""

    def __init__(self, *, config_path: Path | None = None, out: TextIO = sys.stdout,
                 log_level: str = "WARNING", echo: bool = False) -> None:
        self.out = out
        self.echo = echo
        self.config_path = config_path
        self.log_level = log_level
        self.user = PEOPLE["alice"]
        self.channel = CHANNELS["builds"]
        self.user_names = {v: k for k, v in PEOPLE.items()}
        self.channel_names = {v: k for k, v in CHANNELS.items()}
        self.buttons: dict[int, Button] = {}
        self.form_open = False  # a views.open shown and not yet submitted
        self.gone: set[int] = set()  # buttons whose message was replaced or deleted
        self.messages = 0
        self.hooks: dict[str, Origin] = {}
        self.ts_labels: dict[str, str] = {}
        self.pasted: dict[str, tuple[str, str, str]] = {}  # unfurl_id -> (ts, who, where)
        self.seen = 0
        self.lock = threading.RLock()
        self.prompting = False
        self._stack = contextlib.ExitStack()

    # --- life -------------------------------------------------------------------------

    def __enter__(self) -> Demo:
        try:
            self.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def start(self) -> None:
        from bot.runtime import Runtime  # the production assembly

        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(
            prefix="buildbot-demo-")))
        if self.config_path is None:
            path = folder / "buildbot.toml"
            path.write_text(EXAMPLE_JOBS, encoding="utf-8")
        else:
            path = self.config_path
        self.config = load_config(path)
        self.slack = self._stack.enter_context(FakeSlack())
        self.codearts = self._stack.enter_context(FakeCodeArts())
        _stock(self.config, self.slack, self.codearts)
        secret = secrets.token_hex(16)
        settings = _DemoSettings(  # validated from text, as from the environment
            slack_bot_token="xoxb-demo-" + secrets.token_hex(8),  # type: ignore[arg-type]
            slack_signing_secret=secret,  # type: ignore[arg-type]
            slack_api_url=self.slack.api_url, codearts_endpoint=self.codearts.url,
            codearts_token=FakeCodeArts.token,  # type: ignore[arg-type]
            database_url=f"sqlite:///{folder / 'buildbot.db'}",
            buildbot_config=path, build_poll_seconds=POLL_SECONDS,
            progress_update_seconds=POLL_SECONDS,  # progress shown at every check here
            build_link_template=DEMO_LINK_TEMPLATE,
            log_level=self.log_level)  # type: ignore[arg-type]
        self.runtime = Runtime(settings, self.config)
        self._stack.callback(self.runtime.close, 5.0)
        port = self.runtime.bind_http(host="127.0.0.1", port=0)
        closing = threading.Event()
        self._stack.callback(closing.set)  # runs before runtime.close (last in, first out)

        def serve() -> None:
            try:
                self.runtime.server.run()
            except OSError:  # close() took the socket away
                if not closing.is_set():
                    raise

        threading.Thread(target=serve, name="buildbot-demo-http", daemon=True).start()
        self.url = f"http://127.0.0.1:{port}/slack/events"
        self.sender = SlackSender(self.url, secret)
        self._stack.callback(self.sender.close)
        self.folder = folder
        self.jobs_file = "the example jobs file (examples/buildbot.toml)" \
            if self.config_path is None else str(path)

    def banner(self) -> str:
        jobs = ", ".join(self.config.jobs) or "none"
        lines = [
            f"buildbot demo: the real bot at {self.url}, talking to loopback stand-ins for "
            "Slack and CodeArts Build (nothing leaves this machine).",
            f"Jobs: {jobs}, from {self.jobs_file}. Database: {self.folder / 'buildbot.db'}.",
        ]
        if self.config_path is None:
            lines.append("People: " + PEOPLE_NOTE)
        lines.append(f"You are {self._who()}. Type help for the commands, quit to end.")
        return "\n".join(lines)

    # --- one line ---------------------------------------------------------------------

    def prompt(self) -> str:
        return f"{self._name(self.user)} in #{self._channel_name(self.channel)}> "

    def line(self, text: str) -> bool:
        """Act on one typed line; False when it was not understood (or a wait timed out)."""
        text = text.strip()
        said = not text or text.startswith("#")  # nothing, or a comment: nothing to do
        if self.echo:
            self.say(text if said else self.prompt() + text)
        if said:
            return True
        if text.startswith("/"):
            return self.command(text)
        if text.isdigit():
            return self.click(int(text))
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        takes, act = self._words().get(word.lower(), (None, None))
        if act is not None and takes in (ANY, WORDS if rest else NOTHING):
            return act(rest)
        self.say(f"Not understood: {text!r}. Type help for the commands.")
        return False

    def _words(self) -> dict[str, tuple[str, Callable[[str], bool]]]:
        """The demo's own commands: a first word, what may follow it, and what it does."""
        return {"click": (WORDS, self.click_label), "as": (WORDS, self.switch_user),
                "in": (WORDS, self.switch_channel), "pick": (WORDS, self.pick),
                "paste": (WORDS, self.paste),
                "submit": (ANY, self.submit), "wait": (ANY, self.wait),
                "who": (NOTHING, self.say_who), "help": (NOTHING, self.say_help),
                "home": (NOTHING, self.open_home),
                "?": (NOTHING, self.say_help)}

    def say_who(self, _rest: str) -> bool:
        self.say(f"You are {self._who()}.")
        return True

    def say_help(self, _rest: str) -> bool:
        self.say(HELP)
        if self.config_path is None:
            self.say("People: " + PEOPLE_NOTE)
        return True

    def command(self, text: str) -> bool:
        name, _, args = text.partition(" ")
        if name.lower() != "/build":
            self.say(f"{name}: this app only has /build. Type help for the commands.")
            return False
        hook = self.slack.response_url()
        origin = Origin(self.user, self.channel, None)
        self.hooks[_path(hook)] = origin
        resp = self.sender.command(args.strip(), user=self.user, channel=self.channel,
                                   response_url=hook, names=self._names())
        with self.lock:
            self.drain()
            if resp.status_code != 200:
                self.say(f"(the bot answered HTTP {resp.status_code}: {resp.text[:200]})")
            elif resp.content:
                message = _ack_message(resp)
                public = message.get("response_type") == "in_channel"
                origin.key = self._key()
                origin.message = self.show(message, self._ephemeral_to(self.user, self.channel)
                                           if not public else self._public(self.channel),
                                           channel=self.channel, key=origin.key)
                origin.public = public
        self.settle()
        return True

    def open_home(self, _rest: str) -> bool:
        """``home``: you open the app's Home tab (Slack sends ``app_home_opened``)."""
        def published() -> int:
            return sum(c.get("user_id") == self.user for c in self.slack.calls("views.publish"))

        before = published()
        resp = self.sender.post(home_opened_body(self.user))
        if resp.status_code != 200:
            self.say(f"(the bot answered HTTP {resp.status_code}: {resp.text[:200]})")
        self.settle()
        if published() == before:
            self.say("(your Home was shown less than 10 s ago: it is shown again, as it is "
                     "then, when those 10 s are up)")
        return True

    def paste(self, url: str) -> bool:
        """A message with a link, posted as you here: Slack tells the bot (``link_shared``)
        and shows the preview the bot gives it (``chat.unfurl``), if any."""
        if len(url.split()) != 1:
            self.say("paste takes one link, e.g. paste " + DEMO_LINK_TEMPLATE.format(
                job_id="f9d6c8466d614a9788e9a0acf6c15f46", build_no="1"))
            return False
        envelope = self.slack.link_shared([url], channel=self.channel, user=self.user)
        event = envelope["event"]
        self.pasted[str(event["unfurl_id"])] = (str(event["message_ts"]), self.user,
                                                self.channel)
        previews = len(self.slack.calls("chat.unfurl"))
        with self.lock:
            self.drain()
            self.say(f"┌ {self._public(self.channel)}, {self._name(self.user)} wrote\n│ {url}\n")
        resp = self.sender.event(envelope)
        if resp.status_code != 200:
            self.say(f"(the bot answered HTTP {resp.status_code}: {resp.text[:200]})")
        self.settle()
        if len(self.slack.calls("chat.unfurl")) == previews:
            self.say("(no preview: not a build link, or not one shown here to you)")
        return True

    def click(self, number: int) -> bool:
        button = self.buttons.get(number)
        if button is None:
            self.say(f"There is no button [{number}].")
            return False
        if number in self.gone:
            self.say(f"Button [{number}] is no longer shown: its message was replaced.")
            return False
        return self._click(button)

    def click_label(self, label: str) -> bool:
        for button in sorted(self.buttons.values(), key=lambda b: -b.number):
            if button.number not in self.gone \
                    and button.label.casefold() == label.strip().casefold():
                return self._click(button)
        self.say(f"No button labelled {label!r} is shown.")
        return False

    def _click(self, button: Button) -> bool:
        if button.key.startswith(HOME_KEY):  # on a Home: no channel, no response_url
            if button.key != HOME_KEY + self.user:
                self.say(f"Button [{button.number}] is on someone else's Home.")
                return False
            resp = self.sender.post(home_action_body(
                button.action_id, button.value, user=self.user,
                view=self.slack.homes.get(self.user) or {}))
            if resp.status_code != 200:
                self.say(f"(the bot answered HTTP {resp.status_code}: {resp.text[:200]})")
            self.settle()
            return True
        hook = self.slack.response_url()
        self.hooks[_path(hook)] = Origin(self.user, button.channel, button.message,
                                         public=button.ts is not None, key=button.key)
        names = {**self._names(button.channel), "label": button.label}
        resp = self.sender.click(button.action_id, button.value, user=self.user,
                                 channel=button.channel, response_url=hook,
                                 message_ts=button.ts, names=names)
        if resp.status_code != 200:
            self.say(f"(the bot answered HTTP {resp.status_code}: {resp.text[:200]})")
        self.settle()
        return True

    def switch_user(self, who: str) -> bool:
        who = who.strip().lstrip("@")
        if _USER_ID.fullmatch(who):
            user = who
        elif re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]{0,30}", who):
            user = PEOPLE.get(who.lower()) or "U01" + re.sub(r"[^A-Z0-9]", "", who.upper())
            self.user_names.setdefault(user, who.lower())
        else:
            self.say(f"{who!r} is not a name or a Slack user ID (U...).")
            return False
        self.user = user
        self.say(f"You are now {self._who()}.")
        return True

    def switch_channel(self, where: str) -> bool:
        where = where.strip()
        name = where.lstrip("#")
        if _CHANNEL_ID.fullmatch(name) and not where.startswith("#"):
            channel = name
        elif re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,79}", name.lower()):
            channel = CHANNELS.get(name.lower()) or "C01" + re.sub(r"[^A-Z0-9]", "",
                                                                   name.upper())
            self.channel_names.setdefault(channel, name.lower())
        else:
            self.say(f"{where!r} is not a channel name (#name) or a channel ID (C...).")
            return False
        self.channel = channel
        self.say(f"You are now {self._who()}.")
        return True

    def wait(self, rest: str) -> bool:
        """``wait``: until no build is being followed; ``wait N``: N seconds."""
        if rest:
            try:
                seconds = float(rest)
            except ValueError:
                self.say("wait takes a number of seconds, or nothing.")
                return False
            end = time.monotonic() + max(0.0, min(seconds, 3600.0))
            while time.monotonic() < end:
                self.drain()
                time.sleep(min(0.1, max(0.0, end - time.monotonic())))
            self.settle()
            return True
        end = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < end:
            self.drain()
            if self.runtime.flow.wait_idle(0) and self.runtime.store.watching_count() == 0:
                self.settle()
                return True
            time.sleep(0.1)
        self.say(f"(still waiting after {WAIT_LIMIT:.0f} s; giving up)")
        return False

    def settle(self, quiet: float = 0.3, limit: float = 10.0) -> None:
        """Let the work after an ack finish, then show what the bot said (until it has been
        quiet for ``quiet`` seconds)."""
        self.runtime.flow.wait_idle(limit)
        end = time.monotonic() + limit
        seen = -1
        calm_since = time.monotonic()
        while time.monotonic() < end:
            count = len(self.slack.all_calls())
            if count != seen:
                seen, calm_since = count, time.monotonic()
            elif time.monotonic() - calm_since >= quiet:
                break
            time.sleep(0.02)
        self.drain()

    def pick(self, job: str) -> bool:
        view = self._form()
        if view is None:
            self.say("No form is open: type /build to open one.")
            return False
        from bot import forms
        self.sender.pick(view, forms.JOB_BLOCK, forms.JOB_ACTION, job, user=self.user)
        self.settle()
        return True

    def submit(self, rest: str) -> bool:
        view = self._form()
        if view is None:
            self.say("No form is open: type /build to open one.")
            return False
        entered = _entered(view, rest)
        if isinstance(entered, str):
            self.say(f"The form has no field {entered!r}.")
            return False
        if any(b.get("block_id") == "channel" for b in view.get("blocks", [])):
            # the shortcut's form: the channel you are in is the one picked, and Slack
            # gives its response_url with the submission
            hook = self.slack.response_url()
            self.hooks[_path(hook)] = Origin(self.user, self.channel, None)
            resp = self.sender.post(channel_submission_body(view, self.channel, hook, entered,
                                                            user=self.user))
        else:
            resp = self.sender.submit(view, entered, user=self.user)
        answer = resp.json() if resp.content else {}
        with self.lock:
            self.drain()
            self._form_answered(answer)
        self.settle()
        return True

    def _form_answered(self, answer: dict[str, Any]) -> None:
        """The bot's answer to a submitted form: errors on its fields, a new view, or closed."""
        if answer.get("response_action") == "errors":
            self.show_form(answer.get("errors") or {})
        elif answer.get("response_action") == "update":
            self.form_open = False
            self.show({"blocks": answer["view"]["blocks"]}, "the form now reads",
                      channel=self.channel, key=self._key())
        else:
            self.form_open = False
            self.say("┌ the form closed\n")

def _stock(config: BuildbotConfig, slack: FakeSlack, codearts: FakeCodeArts) -> None:
    """Every job of the file exists in the stand-in CodeArts; every user group in Slack."""
    for name, job in config.jobs.items():
        codearts.add_job(job.id, outcome="FAILURE" if name in FAILING_JOBS else "SUCCESS",
                         duration=BUILD_SECONDS.get(name, DEFAULT_BUILD_SECONDS),
                         steps=DEMO_STEPS, outputs=_demo_outputs(name))
        for group in job.usergroups:
            slack.usergroups.setdefault(group, [])
    for group, members in GROUP_MEMBERS.items():
        slack.usergroups[group] = list(members)
    slack.user_names.update({v: k for k, v in PEOPLE.items()})


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def _ack_message(resp: Any) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"response_type": "ephemeral", "text": resp.text}
    return body if isinstance(body, dict) else {"response_type": "ephemeral", "text": str(body)}


# ---------------------------------------------------------------- the command line


def run(args: argparse.Namespace, *, stdin: TextIO | None = None,
        out: TextIO | None = None) -> int:
    """Run the demo: interactive on a terminal, else the script's lines. 0 when every line
    was understood (and every ``wait`` ended), 1 otherwise; 2 for a bad script or jobs file."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    with contextlib.suppress(AttributeError, ValueError):
        out.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        lines = _script_lines(args.script, stdin)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"buildbot demo: cannot read the script {args.script}: "
              f"{getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    _log_to_stderr(args.log_level)
    try:
        demo = Demo(config_path=Path(args.config) if args.config else None, out=out,
                    log_level=args.log_level, echo=lines is not None)
        with demo:
            return _session(demo, lines, stdin, out)
    except ConfigError as exc:
        print("buildbot demo: the jobs file is invalid:\n"
              + "\n".join(f"  - {p}" for p in exc.problems), file=sys.stderr)
        return 2


def _session(demo: Demo, lines: Iterable[str] | None, stdin: TextIO, out: TextIO) -> int:
    """The banner, then the script's lines (1 when one was not understood) or the prompt."""
    out.write(demo.banner() + "\n\n")
    out.flush()
    if lines is not None:
        results = [demo.line(line) for line in _until_quit(lines)]  # every line runs
        ok = all(results)
        return 0 if ok else 1
    _interactive(demo, stdin)
    return 0


def _log_to_stderr(level: str) -> None:
    """The bot's own log lines, on stderr (httpx's requests only from WARNING)."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _script_lines(script: str | None, stdin: TextIO) -> Iterable[str] | None:
    """The lines to run: the script's, or those piped into stdin; None on a terminal."""
    if script:
        return Path(script).read_text(encoding="utf-8").splitlines()
    if not stdin.isatty():
        return (line.rstrip("\n") for line in stdin)
    return None


def _until_quit(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        if line.strip().lower() in ("quit", "exit"):
            return
        yield line


def _interactive(demo: Demo, stdin: TextIO) -> None:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    stop = threading.Event()

    def pump() -> None:  # results arrive while you type
        while not stop.wait(0.25):
            demo.drain()

    threading.Thread(target=pump, name="buildbot-demo-pump", daemon=True).start()
    try:
        while True:
            with demo.lock:
                demo.prompting = True
            try:
                text = input(demo.prompt())
            except EOFError:
                demo.say("")
                break
            finally:
                with demo.lock:
                    demo.prompting = False
            if text.strip().lower() in ("quit", "exit"):
                break
            demo.line(text)
    except KeyboardInterrupt:
        demo.say("")
    finally:
        stop.set()


def main(argv: list[str] | None = None) -> int:
    """``python -m bot demo ...`` without the rest of the command line."""
    from bot import cli

    parser = argparse.ArgumentParser(prog="python -m bot demo", description=cli.DEMO)
    cli.add_demo_arguments(parser)
    return run(parser.parse_args(argv))


def _entered(view: dict[str, Any], rest: str) -> dict[str, str | None] | str:
    """``submit``'s ``field=value`` words by block id (a field by number or label), or the
    first field the form does not have."""
    inputs = [b for b in view.get("blocks", []) if b.get("type") == "input"]
    entered: dict[str, str | None] = {}
    for word in rest.split():
        field, _, value = word.partition("=")
        found = [b for i, b in enumerate(inputs, 1) if field in (
            str(i), str(b["label"]["text"]), str(b["label"]["text"]).lower())]
        if not found:
            return field
        entered[found[0]["block_id"]] = value or None
    return entered
