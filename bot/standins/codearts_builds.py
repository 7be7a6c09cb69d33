"""The build side of the CodeArts stand-in (FakeCodeArts): the Build model (status, steps,
log, outputs) and the CodeArts Build endpoints that run, show, list and stop builds.

``BuildService`` is a mixin: FakeCodeArts holds the jobs and builds it reads. Builds run
on the fake's ``clock``; every time they show is turned into wall-clock time by ``wall``.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

RESERVED_NAMES = {"ld_preload", "ld_library_path", "path", "bash_env", "git_ssh_command"}
_JOB_ID = re.compile(r"^[0-9a-z]{32}$")
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_]{1,128}$")
HISTORY_LIMIT_MAX = 100  # the history call's page: "limit is at most 100" (API reference, SDK)


def _step_word(i: int, current: int, status: str, ended: bool) -> str:
    """A generated step's status: while the build runs, the steps before the current one
    succeeded and the current one runs; once it ended, the steps up to the current one
    succeeded and the rest failed with it (or all succeeded)."""
    if not ended:
        return "success" if i < current else ("running" if i == current else "")
    if status == "SUCCESS" or i < current:
        return "success"
    return "error" if status in ("FAILED", "FAILURE") else ""


@dataclass
class Build:
    """One build of a job; its status moves from RUNNING to ``outcome`` after ``duration``."""

    job_id: str
    number: int
    daily: str
    outcome: str
    duration: float
    started: float  # the fake's clock
    created_at: datetime
    body: Any
    forced_status: str | None = None
    stopped_at: float | None = None
    step_names: tuple[str, ...] = ()
    steps: list[dict[str, Any]] | None = None  # scripted by set_steps: served as they are
    log: str | None = None  # scripted by set_log (None: a short log made up from the build)
    outputs: Any = None  # output-info's ``result``, served as it is (set_outputs; None: none)
    # who and what started it (the build-info record): a run through the API is "MANUAL"
    # by the API's user; start_elsewhere says otherwise
    executor: str = "buildbot"
    trigger: str = "MANUAL"
    branch: str | None = None  # None: the run's codeBranch parameter, else "master"

    def code_branch(self) -> str:
        if self.branch is not None:
            return self.branch
        for p in (self.body or {}).get("parameter") or []:
            if isinstance(p, dict) and p.get("name") == "codeBranch":
                return str(p.get("value"))
        return "master"

    def step_records(self, now: float) -> list[dict[str, Any]]:
        """The scripted steps, or the job's steps advancing with the build's clock: those
        before the current one succeeded, the current one runs, the rest are not reached."""
        if self.steps is not None:
            return [dict(step) if isinstance(step, dict) else step for step in self.steps]
        n = len(self.step_names)
        if not n:
            return []
        status = self.status(now)
        ended = status not in ("RUNNING",) and self.finished_after(now) is not None
        share = 1.0 if ended else min(0.999, (now - self.started) / max(self.duration, 1e-6))
        current = min(n - 1, int(share * n))
        records = []
        for i, name in enumerate(self.step_names):
            word = _step_word(i, current, status, ended)
            took = int(self.duration * 1000 / n) if word in ("success", "error") else 0
            records.append({"name": name, "status": word, "build_time": took})
        return records

    def log_text(self, now: float) -> str:
        if self.log is not None:
            return self.log
        lines = [f"[INFO] build {self.daily} of job {self.job_id} started"]
        lines += [f"[INFO] {s['name']}: {s['status'] or 'waiting'}"
                  for s in self.step_records(now)]
        if self.status(now) not in ("SUCCESS", "RUNNING"):
            lines.append(f"[ERROR] build ended: {self.status(now)}")
        return "\n".join(lines) + "\n"

    def status(self, now: float) -> str:
        if self.forced_status is not None:
            return self.forced_status
        if self.stopped_at is not None:
            return "ABORTED"
        return self.outcome if now - self.started >= self.duration else "RUNNING"

    def finished_after(self, now: float) -> float | None:
        """Seconds from start to end, or None while running."""
        if self.stopped_at is not None:
            return self.stopped_at - self.started
        return self.duration if now - self.started >= self.duration else None



class BuildService:
    """The CodeArts Build endpoints, on the jobs and builds FakeCodeArts keeps."""

    clock: Callable[[], float]
    build_duration: float
    project_id: str
    _wall_offset: float  # clock reading -> epoch seconds
    _lock: threading.Lock
    _jobs: dict[str, dict[str, Any]]
    _builds: dict[str, list[Build]]
    _daily: dict[tuple[str, str], int]

    def wall(self, at: float) -> datetime:
        """The wall-clock time of a reading of the fake's clock (how CodeArts shows it)."""
        return datetime.fromtimestamp(at + self._wall_offset, UTC)

    def _find(self, job_id: str, build_no: int) -> Build | None:
        builds = self._builds.get(job_id, [])
        return builds[build_no - 1] if 0 < build_no <= len(builds) else None

    def _run(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        problem = _invalid_run_body(body)
        if problem:
            return 400, problem, {}
        job_id = body["job_id"]
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return 404, {"error_code": "DEVCB.00031006",
                             "error_msg": "Build task not found."}, {}
            build = self._new_build(job_id, job, body)
        return 200, {"octopus_job_name": f"j_{job_id[:8]}_{build.number}",
                     "actual_build_number": str(build.number),
                     "daily_build_number": build.daily}, {}

    def _new_build(self, job_id: str, job: dict[str, Any], body: Any) -> Build:
        started = self.clock()
        now = self.wall(started)
        day = now.strftime("%Y%m%d")
        self._daily[(job_id, day)] = self._daily.get((job_id, day), 0) + 1
        builds = self._builds[job_id]
        duration = job["duration"] if job["duration"] is not None else self.build_duration
        build = Build(job_id, len(builds) + 1, f"{day}.{self._daily[(job_id, day)]}",
                      job["outcome"], duration, started, now, body,
                      step_names=job.get("steps", ()), log=job.get("log"),
                      outputs=job.get("outputs"))
        builds.append(build)
        return build

    def _lookup(self, job_id: str, build_no: str) -> Build | tuple[int, Any, dict[str, str]]:
        with self._lock:
            build = self._find(job_id, int(build_no)) if build_no.isdigit() else None
        if build is None:
            return 404, {"result": None, "status": "fail", "error": {
                "error_code": "DEVCB.00031006", "error_msg": "Build record not found."}}, {}
        return build

    def _record_info(self, job_id: str, build_no: str) -> tuple[int, Any, dict[str, str]]:
        found = self._lookup(job_id, build_no)
        if not isinstance(found, Build):
            return found
        now = self.clock()
        with self._lock:
            status, took = found.status(now), found.finished_after(now)
        return 200, {"result": _record(found, status, took, now), "error": None,
                     "status": "success"}, {}

    def _history(self, job_id: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """Newest first, ``offset``/``limit`` paging; ``end_time`` empty while running. As
        documented, ``limit`` is at most ``HISTORY_LIMIT_MAX`` and ``offset`` not negative:
        anything else is refused (400 ``CB.00060200``)."""
        try:
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 10))
        except ValueError:
            offset = limit = -1
        if offset < 0 or not 0 <= limit <= HISTORY_LIMIT_MAX:
            return 400, {"error_code": "CB.00060200", "error_msg": "Invalid parameter."}, {}
        now = self.clock()
        with self._lock:
            if job_id not in self._jobs:
                return 404, {"error_code": "DEVCB.00031006",
                             "error_msg": "Build task not found."}, {}
            builds = list(reversed(self._builds.get(job_id, [])))
            records = []
            for b in builds[offset:offset + limit]:
                took = b.finished_after(now)
                end = None if took is None else b.created_at + timedelta(seconds=took)
                records.append({"record_id": f"rec-{b.job_id[:8]}-{b.number}", "job_id": job_id,
                                "build_number": b.number, "start_time": _iso_ms(b.created_at),
                                "end_time": _iso_ms(end) or "", "result": b.status(now)})
        return 200, {"history_records": records, "total": len(builds)}, {}

    def _running(self, job_id: str) -> tuple[int, Any, dict[str, str]]:
        """Whether any build of the job runs, and the job's last build."""
        now = self.clock()
        with self._lock:
            if job_id not in self._jobs:
                return 404, {"status": "fail", "result": None, "error": {
                    "error_code": "DEVCB.00031006", "error_msg": "Build task not found."}}, {}
            builds = list(self._builds[job_id])
        last = builds[-1] if builds else None
        return 200, {"status": "success", "error": None, "result": {
            "is_running": any(b.status(now) == "RUNNING" for b in builds),
            "last_build_no": str(last.number) if last else "",
            "last_build_status": last.status(now) if last else ""}}, {}

    def start_elsewhere(self, job_id: str, *, branch: str | None = None,
                        executor: str = "zhang.san", trigger: str = "MANUAL",
                        outcome: str | None = None) -> Build:
        """A build of the job started by someone else (the console, a push, a timer), on
        ``branch`` (None: master), by ``executor``; ``outcome``: its result (the job's by
        default)."""
        with self._lock:
            build = self._new_build(job_id, self._jobs[job_id], {"job_id": job_id})
            build.branch, build.executor, build.trigger = branch, executor, trigger
            if outcome is not None:
                build.outcome = outcome
            return build

    def _build_info_record(self, job_id: str,
                           build_no: str) -> tuple[int, Any, dict[str, str]]:
        """``GET /v1/record/{job_id}/{build_no}/build-info-record``: enveloped, its
        ``result`` in the shape of the SDK's BuildInfoRecord."""
        found = self._lookup(job_id, build_no)
        if not isinstance(found, Build):
            return found
        now = self.clock()
        with self._lock:
            status, took = found.status(now), found.finished_after(now)
            started_ms = int(found.created_at.timestamp() * 1000)
            result = {
                "number": found.number, "build_time": started_ms, "start_time": started_ms,
                "job_running_status": "FINISHED" if took is not None else "RUNNING",
                "state": status, "user_id": "0" * 31 + "1", "executor": found.executor,
                "nickname": found.executor, "daily_build_number": found.daily,
                "trigger_type": found.trigger, "cost_time": int((took or 0) * 1000),
                "commit_id": "0" * 40, "commit_info": None, "build_type": "branch",
                "code_branch": found.code_branch(), "scm_type": "codehub",
                "scm_web_url": "https://codehub.example/repo", "commit_detail_url": None}
        return 200, {"result": result, "error": None, "status": "success"}, {}

    def _parameters(self, job_id: str, build_no: str) -> tuple[int, Any, dict[str, str]]:
        found = self._lookup(job_id, build_no)
        if not isinstance(found, Build):
            return found
        sent = (found.body or {}).get("parameter") or []
        return 200, {"status": "success", "error": None,
                     "result": [{"name": p["name"], "value": p["value"]} for p in sent]}, {}

    def _details(self, job_id: str, build_no: str) -> tuple[int, Any, dict[str, str]]:
        """Bare JSON, no envelope, as the SDK's ShowHistoryDetailsResponse models it."""
        found = self._lookup(job_id, build_no)
        if not isinstance(found, Build):
            return found[0], {"error_code": "DEVCB.00031006",
                              "error_msg": "Build record not found."}, {}
        with self._lock:
            steps = found.step_records(self.clock())
        return 200, {"job_name": f"job-{job_id[:8]}", "build_number": found.number,
                     "project_id": self.project_id, "project_name": "fake",
                     "parameters": {p["name"]: p["value"]
                                    for p in (found.body or {}).get("parameter") or []},
                     "build_steps": steps}, {}

    def _log(self, job_id: str, build_no: str,
             query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """One page of the log from ``offset``, at most ``length`` characters."""
        found = self._lookup(job_id, build_no)
        if not isinstance(found, Build):
            return found
        try:
            offset, length = int(query.get("offset", 0)), int(query.get("length", 10000))
        except ValueError:
            return 400, {"error_code": "CB.00060200", "error_msg": "Invalid parameter."}, {}
        if offset < 0 or length <= 0:
            return 400, {"error_code": "CB.00060200", "error_msg": "Invalid parameter."}, {}
        with self._lock:
            text = found.log_text(self.clock())
        content = text[offset:offset + length]
        end = offset + len(content)
        return 200, {"result": {"content": content, "offset": offset, "current_offset": end,
                                "has_more_data": end < len(text)},
                     "error": None, "status": "success"}, {}

    def _outputs(self, job_id: str, build_no: str) -> tuple[int, Any, dict[str, str]]:
        """What the build produced, enveloped as the SDK's ShowOutputInfoResponse
        (``result``: an ``OutPutInfoResult``, served as scripted; by default nothing)."""
        found = self._lookup(job_id, build_no)
        if not isinstance(found, Build):
            return found
        with self._lock:
            result = found.outputs if found.outputs is not None else {
                "package_info": None, "package_infos": {}, "image_infos": {}}
        return 200, {"status": "success", "error": None, "result": result}, {}

    def _stop(self, job_id: str, build_no: str) -> tuple[int, Any, dict[str, str]]:
        found = self._lookup(job_id, build_no)
        if not isinstance(found, Build):
            return found[0], {"error_code": "DEVCB.00031006",
                              "error_msg": "Build record not found."}, {}
        now = self.clock()
        with self._lock:
            if found.finished_after(now) is not None:
                return 200, {"success": False, "result": "The build has already finished."}, {}
            found.stopped_at = now
        return 200, {"success": True, "result": ""}, {}


def _invalid_run_body(body: Any) -> dict[str, str] | None:
    """The documented 400 answers for a run body, or None when it is acceptable."""
    if not isinstance(body, dict):
        return _bad("The request body must be a JSON object.")
    for rule in _RUN_BODY_RULES:
        problem = rule(body)
        if problem:
            return problem
    return None


def _bad(msg: str, code: str = "CB.00060200") -> dict[str, str]:
    return {"error_code": code, "error_msg": msg}


def _job_id_problem(body: dict[str, Any]) -> dict[str, str] | None:
    if not isinstance(body.get("job_id"), str) or not _JOB_ID.match(body["job_id"]):
        return _bad("Invalid task ID.", "CB.00060201")
    return None


def _parameters_problem(body: dict[str, Any]) -> dict[str, str] | None:
    params = body.get("parameter", [])
    if params is not None and not isinstance(params, list):
        return _bad("parameter must be a list.")
    for item in params or []:
        problem = _parameter_problem(item)
        if problem:
            return problem
    return None


def _parameter_problem(item: Any) -> dict[str, str] | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
            or not isinstance(item.get("value"), str):
        return _bad("Each parameter needs a string name and value.")
    if not _PARAM_NAME.match(item["name"]) or item["name"].lower() in RESERVED_NAMES:
        return _bad(f"Invalid parameter name: {item['name'][:40]}")
    if len(item["value"]) > 8192:
        return _bad(f"The value of {item['name']} is longer than 8192 characters.")
    return None


def _scm_problem(body: dict[str, Any]) -> dict[str, str] | None:
    if body.get("scm") is not None and not isinstance(body["scm"], dict):
        return _bad("scm must be an object.")
    return None


# The checks on a run body (a JSON object), in order; the first problem is the answer.
_RUN_BODY_RULES: tuple[Callable[[dict[str, Any]], dict[str, str] | None], ...] = (
    _job_id_problem, _parameters_problem, _scm_problem)


def _iso_ms(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat(timespec="milliseconds")


def _record(build: Build, status: str, took: float | None, now: float) -> dict[str, Any]:
    finished = None if took is None else build.created_at + timedelta(seconds=took)
    elapsed = took if took is not None else now - build.started
    return {
        "id": uuid.uuid4().hex, "build_record_id": f"rec-{build.job_id[:8]}-{build.number}",
        "codeci_job_id": build.job_id, "build_no": build.number, "daily_build_num": build.daily,
        "status": status, "branch": "master", "tag": None, "commit": "0" * 40,
        "trigger_type": "MANUAL", "create_time": _iso_ms(build.created_at),
        "start_time": _iso_ms(build.created_at), "finish_time": _iso_ms(finished),
        "duration": int(elapsed * 1000), "err_msg": None,
    }

