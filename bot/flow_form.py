"""The build form on the Slack side: open it (``/build`` alone, ``/build <job>`` missing a
required value, help's Open the form, a confirmation's Edit parameters), show a picked job's
fields, and check a submitted form before the ack so each problem comes back on its field.

The views themselves are built in ``bot.forms``; a valid form goes on through
``Flow.after_command`` as a typed command would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot import forms
from bot import messages as msg
from bot.answers import Click, Told
from bot.command import BuildCommand, parse
from bot.config import JobConfig
from bot.flow_types import Ack, FlowRoom, Outcome, Who, _dict, _str, read_click
from bot.home_view import NO_ACCESS
from bot.policy import runnable_jobs, user_allowed

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class FormFlow(FlowRoom):
    """The form's listeners and what they do; the shared pieces (the worker, the checks of
    a typed command, ``after_command``) are the ``Flow``'s."""

    form_key: bytes | None = None  # signs the form's metadata; create_app sets it

    def _form_key(self) -> bytes:
        if self.form_key is None:  # no signing secret (Socket Mode): the bot token's
            self.form_key = forms.form_key(getattr(self.flow.slack, "token", None) or "buildbot")
        return self.form_key

    def form_instead(self, who: Who, outcome: Outcome) -> JobConfig | None:
        """The job, when ``/build <job>`` was typed alone and was refused only because a
        required parameter has no value (no default): the form asks for it."""
        if outcome.decision != "denied" or not outcome.fields or not who.trigger_id \
                or not _job_alone(who.text):
            return None
        job = self._job_of(outcome.job or "")
        return job if job is not None and _form_fixes(job, outcome.fields) else None

    def _job_of(self, name: str) -> JobConfig | None:
        """The job of this name, or else the first whose name matches regardless of case."""
        return self.config.jobs.get(name) or next(
            (j for j in self.config.jobs.values() if j.name.casefold() == name.casefold()), None)

    def open_form(self, who: Who, job: JobConfig | None, refused: Outcome | None = None, *,
                  prefill: BuildCommand | None = None, editing: str | None = None) -> None:
        """Open the form for ``who`` (its channel, its trigger_id). If Slack will not open
        it, the user is told what typing would have told (``refused``), or how to type."""
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=who.channel_id,
                             usergroups=self.groups)
        metadata = forms.seal(self._form_key(), {
            "u": who.user_id, "c": who.channel_id, "t": who.team_id or "",
            "r": who.response_url or "", "e": editing or "", "j": job.name if job else ""})
        view = forms.form_view([(j.name, j.description) for j in jobs], job,
                               metadata=metadata, prefill=prefill)
        opened = self.engine.notifier.open_view(who.trigger_id or "", view)
        if opened.ok:
            return
        log.warning("could not open the form user=%s error=%s", who.user_id, opened.error)
        self._not_opened(who, refused, opened.error)

    def _not_opened(self, who: Who, refused: Outcome | None, error: str | None) -> None:
        """Slack would not open the form: what typing would have told, or how to type."""
        if refused is not None:
            self.respond(who.response_url, refused.reply or msg.problems_message(
                [refused.detail or "The form could not be opened."]))
            self.flow.after_command(who, refused)
            return
        self.respond(who.response_url, msg.ephemeral(
            "buildbot could not open the form (Slack said "
            f"{msg.code(error or 'nothing', 60)}). Type the command instead: "
            "`/build <job> name=value ...` (`/build help` shows how).", replace=False))

    def on_form_click(self, ack: Ack, body: dict[str, Any],
                      handler: Callable[[Click, str], None]) -> None:
        """Edit parameters or Open the form: ack, then open the form at once."""
        ack()
        self.flow.at_once(handler, read_click(body), _str(body.get("trigger_id")))

    def edit_clicked(self, click: Click, trigger_id: str) -> None:
        """The confirmation's Edit parameters: the form for its job, showing its values."""
        answer = self.engine.editable(click)
        request = answer.request
        if answer.told is not Told.EDITABLE or request is None:
            self.flow.tell(click.response_url, answer)
            return
        job = self.config.jobs[request.job_name]
        who = Who(click.user_id, request.channel_id, click.team_id, click.response_url,
                  request.command, trigger_id=trigger_id)
        self.open_form(who, job, prefill=forms.prefill_from_body(job.name, request.body),
                       editing=request.id)

    def open_form_clicked(self, click: Click, trigger_id: str, channel_id: str,
                          job_name: str) -> None:
        """Help's Open the form: the form, with the job picked if it may be run here."""
        who = Who(click.user_id, channel_id, click.team_id, click.response_url, "",
                  trigger_id=trigger_id)
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=channel_id,
                             usergroups=self.groups)
        self.open_form(who, next((j for j in jobs if j.name == job_name), None))

    # --- the "Run a build" shortcut (and the App Home's Run… buttons) --------------------
    # A shortcut carries no channel: its form asks for one first (a conversations select
    # whose submission brings that channel's response_url), lists every job the person may
    # run in some channel, and is checked for the chosen channel when submitted.

    def jobs_anywhere(self, user_id: str) -> list[JobConfig]:
        """The jobs this person may run in at least one channel."""
        return [job for job in self.config.jobs.values()
                if user_allowed(self.config, job, user_id, self.groups) is True]

    def open_shortcut_form(self, user_id: str, team_id: str | None, trigger_id: str,
                           job_name: str | None = None) -> None:
        """The form with a Channel field, ``job_name`` picked when they may run it."""
        jobs = self.jobs_anywhere(user_id)
        job = next((j for j in jobs if j.name == job_name), None)
        metadata = forms.seal(self._form_key(), {
            "u": user_id, "c": "", "t": team_id or "", "r": "", "e": "",
            "j": job.name if job else "", "s": "1"})
        view = forms.form_view([(j.name, j.description) for j in jobs], job,
                               metadata=metadata, channel_field=True) if jobs else \
            forms.notice_view("Run a build", [NO_ACCESS])
        opened = self.engine.notifier.open_view(trigger_id, view)
        if not opened.ok:
            log.warning("could not open the shortcut's form user=%s error=%s", user_id,
                        opened.error)

    def on_shortcut(self, ack: Ack, body: dict[str, Any]) -> None:
        """The global shortcut "Run a build": ack, then open the form at once."""
        ack()
        user = _str(_dict(body.get("user")).get("id"))
        team = _str(_dict(body.get("team")).get("id")) or None
        self.flow.at_once(self.open_shortcut_form, user, team, _str(body.get("trigger_id")))

    def on_home_run(self, ack: Ack, body: dict[str, Any]) -> None:
        """A job's Run… button on the App Home: the shortcut's form, that job picked."""
        ack()
        click = read_click(body)
        self.flow.at_once(self.open_shortcut_form, click.user_id, click.team_id,
                          _str(body.get("trigger_id")), click.value)

    def on_form_job(self, ack: Ack, body: dict[str, Any]) -> None:
        """A job picked in the form: ack, then show its fields (``views.update``)."""
        ack()
        self.flow.at_once(self.show_job, body)

    def _form_who(self, body: dict[str, Any]) -> tuple[Who, dict[str, str]] | None:
        """Who submitted (Slack's ``user.id``) and where the form was opened (the signed
        metadata); None if the metadata is not ours or names someone else."""
        user_id = _str(_dict(body.get("user")).get("id"))
        meta = forms.unseal(self._form_key(), _dict(body.get("view")).get("private_metadata"))
        if meta is None or not user_id or meta.get("u") != user_id or not (
                meta.get("c") or meta.get("s")):
            log.warning("form refused: metadata not ours or not this user's user=%s", user_id)
            return None
        team = _str(_dict(body.get("team")).get("id")) or meta.get("t") or None
        if meta.get("s"):  # the shortcut's form: the channel picked in it, its response_url
            state = _dict(_dict(_dict(body.get("view")).get("state")).get("values"))
            channel = forms.picked_channel(state) or ""
            return Who(user_id, channel, team, _response_url(body, channel), ""), meta
        return Who(user_id, meta["c"], team, meta.get("r") or None, ""), meta

    def show_job(self, body: dict[str, Any]) -> None:
        view = _dict(body.get("view"))
        found = self._form_who(body)
        if found is None:
            return
        who, meta = found
        actions = body.get("actions")
        picked = _dict(_dict(actions[0] if isinstance(actions, list) and actions else {}
                             ).get("selected_option")).get("value")
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=who.channel_id,
                             usergroups=self.groups)
        shortcut = bool(meta.get("s"))
        if shortcut:  # every job they may run somewhere; the channel is checked on submit
            jobs = self.jobs_anywhere(who.user_id)
        job = next((j for j in jobs if j.name == picked), None)
        metadata = forms.seal(self._form_key(), {**meta, "j": job.name if job else ""})
        updated = self.engine.notifier.update_view(
            _str(view.get("id")), forms.form_view([(j.name, j.description) for j in jobs], job,
                                                  metadata=metadata, channel_field=shortcut,
                                                  channel=who.channel_id or None),
            view_hash=_str(view.get("hash")) or None)
        if not updated.ok:  # a newer pick updated it first (hash_conflict), or it closed
            log.info("form not updated user=%s error=%s", who.user_id, updated.error)

    def on_form_submit(self, ack: Ack, body: dict[str, Any]) -> None:
        """A submitted form: checked here, before the ack, so each problem can come back on
        its field; a valid one closes the form and goes on as a typed command would."""
        found = self._form_who(body)
        if found is None:
            ack(response_action="update", view=forms.notice_view(
                "Form not accepted", ["This form could not be read back. Type /build again "
                                      "to open a new one."]))
            return
        who, meta = found
        who.received_at = time.monotonic()
        state = _dict(_dict(_dict(body.get("view")).get("state")).get("values"))
        if meta.get("s") and not who.channel_id:
            ack(response_action="errors", errors={
                forms.CHANNEL_BLOCK: "Pick the channel to run the build in."})
            return
        job = self._submitted_job(state, meta)
        if isinstance(job, str):
            ack(response_action="errors", errors={forms.JOB_BLOCK: job})
            return
        entered = forms.read_form(state, job)
        assert entered.command is not None
        who.text = forms.command_text(entered.command)
        outcome = self.flow.check(entered.command, who, self.groups)
        errors, general = _sorted_problems(dict(entered.problems), outcome, job)
        if general and meta.get("s"):  # the shortcut's form: a refusal is the channel's
            errors[forms.CHANNEL_BLOCK] = " ".join(general)
            general = []
        if general:  # not allowed (any more) here: the same words as a typed command
            ack(response_action="update", view=forms.notice_view("Not started", general))
            self.flow.submit(self.flow.after_command, who, outcome)
            return
        if errors or outcome.approved is None:
            ack(response_action="errors", errors={
                b: msg.shorten(p, 1000) for b, p in errors.items()})
            if outcome.approved is None:
                self.flow.submit(self.flow.after_command, who, outcome)
            return
        ack(response_action="clear")
        self.flow.submit(self._form_approved, who, outcome, meta.get("e") or None,
                         reply_to=who.response_url)

    def _submitted_job(self, state: dict[str, Any], meta: dict[str, str]) -> JobConfig | str:
        """The job the form was submitted for, or what to say on its list."""
        job = self.config.jobs.get(forms.picked_job(state) or "")
        if job is None:
            return "Pick a job from the list."
        if job.name != meta.get("j"):
            return "Wait until this job's fields appear, then submit again."
        return job

    def _form_approved(self, who: Who, outcome: Outcome, editing: str | None) -> None:
        """An edited request's old question dies first (the store's conditional move, so
        its Run can never start a build), then the new one is asked like a typed one."""
        if editing:
            self.flow.tell(who.response_url, self.engine.replace_edited(editing, who.user_id))
        self.flow.after_command(who, outcome)


def _response_url(body: dict[str, Any], channel: str) -> str | None:
    """The response_url Slack gave with the submission for the picked ``channel``."""
    urls = body.get("response_urls")
    for item in urls if isinstance(urls, list) else []:
        item = _dict(item)
        if item.get("block_id") == forms.CHANNEL_BLOCK and item.get("channel_id") == channel:
            url = _str(item.get("response_url"))
            return url or None
    return None


def _job_alone(text: str) -> bool:
    """``/build <job>`` with no parameter, commit or tag."""
    parsed = parse(text)
    return isinstance(parsed, BuildCommand) and not parsed.params and parsed.commit is None \
        and parsed.tag is None


def _form_fixes(job: JobConfig, fields: list[tuple[str | None, str]]) -> bool:
    """Every problem is about one of the job's parameters, and one of them is required
    without a default: the form can ask for it."""
    return all(field in job.params for field, _ in fields) and any(
        spec.required and not spec.default for spec in job.params.values())


def _sorted_problems(errors: dict[str, str], outcome: Outcome,
                     job: JobConfig) -> tuple[dict[str, str], list[str]]:
    """The checks' problems added to the form's own (``errors``, by block), each on its
    field's block; those about no field, or a refusal as a whole, are general."""
    general: list[str] = []
    for field, problem in outcome.fields or []:
        block = forms.block_for(field, job)
        if block is None:
            general.append(problem)
        else:
            errors[block] = f"{errors[block]} {problem}" if block in errors else problem
    if outcome.approved is None and not outcome.fields:  # refused as a whole
        general.append(outcome.detail or "Nothing was started.")
    return errors, general
