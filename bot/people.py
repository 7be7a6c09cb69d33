"""Who started a followed build, in words (issue 28): the build record's CodeArts user
and trigger, and the jobs file's ``[people]`` (CodeArts user names -> Slack users). Pure."""

from __future__ import annotations

from bot import messages as msg
from bot.config import BuildbotConfig
from bot.lifecycle import TRIGGER_SLACK, Build


def started_by(config: BuildbotConfig, build: Build) -> str | None:
    """The Slack user who started a followed build: its requester in another channel,
    or the person ``[people]`` maps its CodeArts user to; None when not known."""
    if build.trigger == TRIGGER_SLACK:
        return build.started_by or None
    return config.person(build.started_by)


def started_words(config: BuildbotConfig, build: Build) -> str:
    """``started by <@U…> (by a push)``, ``started by zhang.san in CodeArts (manually)``,
    … (``messages.started_words``)."""
    return msg.started_words(trigger=build.trigger, codearts_user=build.started_by,
                             person=started_by(config, build))
