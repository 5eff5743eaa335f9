"""The first hour of a new user: the README's Quick start as copied, the ``taskflow db``
commands and plain ``alembic`` without arguments, cron typos, a file name where a URL
belongs, stopping a server that ran a process task, and an unreachable database."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from taskflow import ConfigurationError, DatabaseUnavailable, TaskManager
from taskflow._schedules.triggers import make_trigger
from taskflow._store import migrate
from taskflow.cli import main
from tests.conftest import wait_until
from tests.servers import ROOT, free_port, poll, post
from tests.test_dynamic import WEEKLY, spec_app

# -- 1. the README's Quick start ---------------------------------------------------------


def readme_section(heading: str) -> str:
    """The text of the README section under ``## heading`` (up to the next ``## ``)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def quick_start_code() -> str:
    """The first Python block of the Quick start, as a user copies it."""
    match = re.search(r"```python\n(.*?)```", readme_section("Quick start"), re.S)
    assert match, "no python block in the README's Quick start"
    return match.group(1)


def test_the_install_section_names_an_extra_that_brings_uvicorn() -> None:
    install = readme_section("Install") + readme_section("Quick start")
    assert 'pip install "taskflow-sql[server]"' in install
    assert "uvicorn main:app" in install
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    server = project["optional-dependencies"]["server"]
    assert [req for req in server if re.match(r"uvicorn\b", req)], server
    # The pinned versions the scripts install cover the extra.
    assert re.search(r"^uvicorn==", (ROOT / "scripts/constraints.txt").read_text(), re.M)


def load_quick_start(folder: Path, db_url: str) -> Any:
    """Save the Quick start as ``main.py`` in ``folder`` and import it. On SQLite it runs
    verbatim (``tasks.db`` in the working folder is the test's database); on PostgreSQL
    only the database argument is swapped, as its comment suggests."""
    code = quick_start_code()
    if not db_url.startswith("sqlite"):
        assert 'snapshot_db="tasks.db"' in code
        code = code.replace('snapshot_db="tasks.db"', f"database_url={db_url!r}")
    path = folder / "main.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(f"quick_start_{os.getpid()}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_quick_start_runs_and_answers_404_for_an_unknown_task(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the db_url fixture's SQLite file is tmp_path/tasks.db
    module = load_quick_start(tmp_path, db_url)
    with TestClient(module.app) as client:
        signed_up = client.post("/signup", params={"email": "a@example.com"})
        assert signed_up.status_code == 200, signed_up.text
        task_id = signed_up.json()["task_id"]

        def finished() -> bool:
            answer = client.get(f"/tasks/{task_id}")
            assert answer.status_code == 200, answer.text
            return answer.json()["status"] == "success"

        wait_until(finished, what="the Quick start's task to succeed")
        unknown = client.get("/tasks/no-such-task")
        assert unknown.status_code == 404
        assert unknown.json() == {"detail": "no such task"}


# -- 2. taskflow db / alembic without a URL, and missing files ---------------------------


@pytest.fixture
def no_env_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh working folder and no TASKFLOW_DATABASE_URL."""
    monkeypatch.delenv("TASKFLOW_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("action", [["current"], ["check"], ["upgrade"]])
def test_cli_without_any_url_says_how_to_give_one(
    action: list[str], no_env_url: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", *action]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taskflow: error: no database given")
    assert "--url" in err and "TASKFLOW_DATABASE_URL" in err
    assert list(no_env_url.iterdir()) == []  # no taskflow.db appeared


@pytest.mark.parametrize(
    ("action", "code", "stream"),
    [
        (["current"], 2, "err"),
        (["check"], 1, "out"),
        (["downgrade", "--revision", "base"], 2, "err"),
    ],
)
def test_cli_reports_a_missing_sqlite_file_without_creating_it(
    action: list[str], code: int, stream: str, no_env_url: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", *action, "--url", "sqlite:///tasks.db"]) == code
    said = getattr(capsys.readouterr(), stream)
    assert f"{no_env_url / 'tasks.db'} does not exist" in said
    assert "taskflow db upgrade --url sqlite+aiosqlite:///tasks.db" in said
    assert list(no_env_url.iterdir()) == []


def test_cli_reads_the_environment_and_names_the_database(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TASKFLOW_DATABASE_URL", db_url)
    assert main(["db", "current"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == migrate.head()  # stdout stays machine-readable
    shown = sa.make_url(db_url)
    if shown.get_backend_name() == "sqlite":
        assert captured.err.strip() == f"database: SQLite file {shown.database}"
    else:
        assert captured.err.strip() == f"database: {shown.render_as_string()}"
    assert main(["db", "upgrade"]) == 0
    said = capsys.readouterr().out.strip()
    target = migrate.describe_target(db_url)
    assert said == f"database is at revision {migrate.head()} ({target})"


def test_cli_masks_the_password_of_the_database_it_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://taskflow:s3cret@127.0.0.1:{free_port()}/nowhere"
    assert migrate.describe_target(url) == f"{url.replace('s3cret', '***')}"
    monkeypatch.setenv("TASKFLOW_DATABASE_URL", url)
    assert main(["db", "current"]) == 2
    assert "s3cret" not in capsys.readouterr().err


def alembic(*args: str, cwd: Path, url: str | None) -> subprocess.CompletedProcess[str]:
    """Run plain ``alembic -c <checkout>/alembic.ini ...`` as a user of the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "TASKFLOW_DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    if url is not None:
        env["TASKFLOW_DATABASE_URL"] = url
    command = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_alembic_without_the_variable_says_how_to_set_it(tmp_path: Path) -> None:
    for args in (("current",), ("upgrade", "head")):
        done = alembic(*args, cwd=tmp_path, url=None)
        assert done.returncode != 0
        assert "no database given: set TASKFLOW_DATABASE_URL" in done.stderr
        assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_alembic_current_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    done = alembic("current", cwd=tmp_path, url="sqlite:///tasks.db")
    assert done.returncode != 0
    assert f"{tmp_path / 'tasks.db'} does not exist" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_alembic_upgrade_and_current_name_the_database(db_url: str, tmp_path: Path) -> None:
    for args in (("upgrade", "taskflow@head"), ("current",)):
        done = alembic(*args, cwd=tmp_path, url=db_url)
        assert done.returncode == 0, done.stderr
        assert f"database: {migrate.describe_target(db_url)}" in done.stderr
    assert migrate.head() in done.stdout


# -- 3. cron expressions -----------------------------------------------------------------


def nightly() -> None:
    """A function to schedule."""


BAD_CRONS = [
    ("0 25 * * *", "hour field '25' is out of range 0-23"),
    ("61 * * * *", "minute field '61' is out of range 0-59"),
    ("0 0 0 * *", "day-of-month field '0' is out of range 1-31"),
    ("0 0 * 13 *", "month field '13' is out of range 1-12"),
    ("0 0 * * 8", "day-of-week field '8' is out of range 0-7"),
    ("0-61 * * * *", "minute field '0-61': '61' is out of range 0-59"),
    ("*/0 * * * *", "minute field '*/0': step '0' must be a whole number above 0"),
    ("0 9 * * mon-fry", "day-of-week field 'mon-fry': 'fry' is not a day name (SUN-SAT)"),
    ("0 9 * JANUARY *", "month field 'JANUARY' is not a month name (JAN-DEC)"),
    ("x 9 * * *", "minute field 'x' is not a number 0-59"),
    ("mon-fry", "expected five fields (minute hour day-of-month month day-of-week)"),
    ("0 9 * *", "got 4 fields"),
    ("@reboot", "@reboot is not supported; use five fields or one of @yearly"),
]


@pytest.mark.parametrize(("cron", "message"), BAD_CRONS)
def test_a_bad_cron_says_which_field_is_wrong(cron: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_trigger(every=None, cron=cron)
    assert str(caught.value).startswith(f"invalid cron expression {cron!r}: ")
    assert message in str(caught.value)
    assert caught.value.field == "cron"
    with pytest.raises(ValueError, match=re.escape(message)):
        TaskManager().schedule(cron=cron)(nightly)


@pytest.mark.parametrize(("cron", "message"), BAD_CRONS[:4] + BAD_CRONS[7:9] + BAD_CRONS[-1:])
def test_a_bad_cron_over_the_management_router_says_which_field_is_wrong(
    db_url: str, cron: str, message: str
) -> None:
    app, _, group, _ = spec_app(db_url)
    with TestClient(app) as client:
        response = client.post("/task-manager/tasks", json={**WEEKLY, "cron_expression": cron})
        # 400 with the message as ``detail``, as fastapi-task-manager answers a bad cron.
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"invalid cron expression {cron!r}: ")
        assert message in detail
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            group.add_dynamic_task(function_name="send_report", cron_expression=cron)
        assert len(client.get("/task-manager/tasks").json()) == 1  # only the static one


@pytest.mark.parametrize(
    ("alias", "fields"),
    [("@daily", "0 0 * * *"), ("@hourly", "0 * * * *"), ("@WEEKLY", "0 0 * * 0")],
)
def test_cron_aliases_fire_like_their_five_fields(alias: str, fields: str) -> None:
    from datetime import UTC, datetime

    moment = datetime(2030, 5, 17, 13, 30, tzinfo=UTC)  # a Friday
    for zone in ("UTC", "Europe/Paris"):
        by_alias = make_trigger(every=None, cron=alias, timezone=zone)
        by_fields = make_trigger(every=None, cron=fields, timezone=zone)
        assert by_alias.first_after(moment) == by_fields.first_after(moment)
        slot = by_alias.first_after(moment)
        assert by_alias.next_after(slot, slot) == by_fields.next_after(slot, slot)


def test_a_cron_alias_over_the_management_router(db_url: str) -> None:
    app, _, _, _ = spec_app(db_url)
    with TestClient(app) as client:
        body = {**WEEKLY, "cron_expression": "@daily", "name": "nightly"}
        created = client.post("/task-manager/tasks", json=body)
        assert created.status_code == 200, created.text
        assert created.json()["cron_expression"] == "@daily"
        listed = {t["name"]: t for t in client.get("/task-manager/tasks").json()}
        assert listed["nightly"]["expression"] == "@daily", listed["nightly"]


# -- 4. a file name where a URL belongs --------------------------------------------------


@pytest.mark.parametrize("parameter", ["database_url", "snapshot_backend"])
def test_a_file_name_as_database_url_suggests_what_to_write(parameter: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        TaskManager(**{parameter: "tasks.db"})
    message = str(caught.value)
    assert "Could not parse" not in message
    assert "snapshot_db='tasks.db'" in message
    assert f"{parameter}='sqlite:///tasks.db'" in message
    assert caught.value.field == parameter


# -- 5. stopping a server that ran a process task ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stopping_after_a_process_task_leaks_no_semaphore(
    spawn: Any, db: Any, stop_signal: signal.Signals
) -> None:
    server = spawn("web").start()
    task_id = post(server.url, "/process", value=21)["task_id"]
    poll(
        lambda: db.tasks()[task_id]["status"] == "success",
        timeout=60,
        what="the process task to succeed",
    )
    # The resource tracker (one of these) prints its warning when it exits, which can be
    # after the server itself: the log is read once all of them are gone.
    helpers = server.children()
    assert helpers, "the process pool started no helper process"
    server.proc.send_signal(stop_signal)
    # uvicorn re-raises the signal once its shutdown completed
    assert server.proc.wait(30) in (0, -stop_signal)
    poll(lambda: not any(alive(pid) for pid in helpers), timeout=30, what="helpers to exit")
    server._reap()
    log = server.log(tail=50000)
    assert "Finished server process" in log
    assert "leaked semaphore" not in log
    assert "resource_tracker" not in log


def alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- 6. an unreachable database ----------------------------------------------------------


def closed_port_url() -> str:
    return f"postgresql://taskflow:s3cret@127.0.0.1:{free_port()}/tasks"


def test_cli_unreachable_database_says_what_failed_and_what_to_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = closed_port_url()
    assert main(["db", "current", "--url", url]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(
        f"taskflow: error: cannot connect to the task database {url.replace('s3cret', '***')}"
    )
    assert "check that the PostgreSQL server is running" in err
    assert "the URL are right" in err
    assert "retry the request" not in err and "s3cret" not in err


@pytest.mark.anyio
async def test_startup_on_an_unreachable_database_says_what_to_check() -> None:
    manager = TaskManager(database_url=closed_port_url())
    with pytest.raises(DatabaseUnavailable) as caught:
        await manager.startup()
    message = str(caught.value)
    assert message.startswith(
        "cannot connect to the task database postgresql+asyncpg://taskflow:***@"
    )
    assert "check that the PostgreSQL server is running" in message
    assert "retry the request" not in message and "s3cret" not in message
