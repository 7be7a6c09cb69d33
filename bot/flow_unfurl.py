"""Build link previews on the Slack side: a link to a build (one ``BUILD_LINK_TEMPLATE``
makes) pasted in a channel where the bot is comes with a preview of the build
(``link_shared`` → ``chat.unfurl``).

Everyone in the channel sees a preview, so one is shown only when the job is an entry of
the jobs file, the job may be run in that channel and the person who pasted the link may
run it there (the checks of a run, as ``/build status`` makes them, by the job entry the
build belongs to). Anything else, or a build CodeArts does not know, gets no preview: the
link stays a plain link, and nothing is said. The preview's Stop and Rebuild buttons are
the build message's own, so a click is checked for whoever clicks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot import messages as msg
from bot.flow_types import FlowRoom
from bot.lifecycle import ORIGIN_SUBSCRIPTION
from bot.links import BuildLink, LinkMatcher, why_no_previews
from bot.status import entries_of

if TYPE_CHECKING:
    from bot.flow import Flow

log = logging.getLogger(__name__)

MAX_LINKS = 5  # links of one message previewed at most (each may cost a CodeArts read)


class UnfurlFlow(FlowRoom):
    """``link_shared`` events: which links to preview, and the previews."""

    def __init__(self, flow: Flow) -> None:
        super().__init__(flow)
        template = self.engine.link_template
        off = why_no_previews(template)
        self.matcher = LinkMatcher(template) if template and off is None else None
        if template and off is not None:
            log.info("%s", off)

    def on_link_shared(self, event: dict[str, Any]) -> None:
        """After the ack: preview each build link of the message the pasting user may show
        here, in one ``chat.unfurl`` call."""
        if self.matcher is None:
            return
        channel, user = _str(event.get("channel")), _str(event.get("user"))
        if not channel or not user or event.get("is_bot_user_member") is False:
            return  # only where the bot is, for someone Slack named
        unfurls: dict[str, dict[str, Any]] = {}
        for link in self._links(event):
            preview = self.preview(link, user_id=user, channel_id=channel)
            if preview is not None:
                unfurls[link.url] = {"blocks": preview["blocks"]}
        if not unfurls:
            return
        sent = self.engine.notifier.unfurl(
            channel, _str(event.get("message_ts")), unfurls,
            unfurl_id=_str(event.get("unfurl_id")) or None,
            source=_str(event.get("source")) or None)
        if not sent.ok:
            log.info("previews not shown channel=%s error=%s", channel, sent.error)

    def _links(self, event: dict[str, Any]) -> list[BuildLink]:
        """The distinct build links among the event's links, at most ``MAX_LINKS``."""
        links = event.get("links")
        found: dict[str, BuildLink] = {}
        for item in links if isinstance(links, list) else []:
            url = _str(item.get("url")) if isinstance(item, dict) else ""
            link = self.matcher.match(url) if self.matcher and url else None
            if link is not None and link.url not in found:
                found[link.url] = link
            if len(found) >= MAX_LINKS:
                break
        return list(found.values())

    def preview(self, link: BuildLink, *, user_id: str,
                channel_id: str) -> dict[str, Any] | None:
        """The preview of one build for this channel, pasted by ``user_id``; None when the
        job is not in the jobs file, may not be shown here, or the build is unknown."""
        if not any(job.id == link.job_id for job in self.config.jobs.values()):
            return None  # a raw task ID an admin may run is still not a job of the file
        facts = self.engine.build_facts(link.job_id, link.build_no)
        if facts is None:
            return None
        entries = entries_of(self.config, facts.ours, link.job_id)
        allowed = self.flow.status.may_act(entries, user_id, channel_id)
        if isinstance(allowed, list):
            return None
        job = self.config.jobs.get(allowed[0])
        ours = facts.ours
        return msg.build_preview(
            job_name=allowed[0], description=job.description if job else "",
            daily=facts.daily, build_no=link.build_no, result=facts.result,
            duration_ms=facts.duration_ms, progress=facts.progress,
            started_by=facts.started_by,
            stop_id=ours.id if ours is not None and facts.result is None else None,
            rebuild_id=ours.id if ours is not None and ours.origin != ORIGIN_SUBSCRIPTION
            else None)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
