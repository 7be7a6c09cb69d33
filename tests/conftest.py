"""Shared fixtures: a real database per test (SQLite always, PostgreSQL when
TEST_DATABASE_URL is set), each in its own file or schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.store import Store, engine_url

PG_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _pg_schema_url(base: str) -> Iterator[str]:
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(engine_url(base))
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL, once per available backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'buildbot.db'}"
    else:
        assert PG_URL
        yield from _pg_schema_url(PG_URL)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.from_url(db_url)
    yield s
    s.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL schema of its own; skipped without TEST_DATABASE_URL."""
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    yield from _pg_schema_url(PG_URL)


@pytest.fixture
def stand_ins() -> Iterator[tuple[Any, Any]]:
    """Loopback Slack and CodeArts for tests that run ``python -m bot`` as a process."""
    from tests.fakes.codearts import FakeCodeArts
    from tests.fakes.slack import FakeSlack
    from tests.harness import BACKEND_ID, DOCS_ID

    with FakeSlack() as slack, FakeCodeArts() as codearts:
        codearts.add_job(BACKEND_ID, duration=1.5)
        codearts.add_job(DOCS_ID)
        slack.usergroups["SDEVS"] = []
        yield slack, codearts
