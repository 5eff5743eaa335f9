"""Hostile input over HTTP, on SQLite and PostgreSQL.

* The management router and TaskAdmin's JSON API are both in the app's OpenAPI schema;
  schemathesis fuzzes every operation from ``app.openapi()`` (positive and negative
  cases, and positive cases of a copy steered to existing ids and valid values), logged
  in with a CSRF token, through the app's own TestClient: no 5xx, and every error is
  JSON with a message. The dashboard's HTML pages are not in the schema (they read
  their filters from the query string by hand): hypothesis draws their query strings.
* Malformed crons, timezones, task ids, cursors, limits, filters, huge numbers and
  unicode/NUL text on every surface (router, JSON API, dashboard pages and forms): 4xx
  (or the page's error banner) with a message, never a 500.
* SQL injection attempts through every filter and search field are inert, and LIKE
  wildcards match literally.
* Encrypted arguments and results stay out of pages, API responses and logs unless
  ``display_func_args=True`` asks for them; key rotation keeps old tasks readable there.

Each bug these tests found has its own case in :data:`REGRESSIONS` (or its own test).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from taskflow import TaskAdmin, TaskManager, task_log
from taskflow._store.schema import schedules, task_logs, tasks
from taskflow.admin._security import FLASH_COOKIE
from tests.admin_support import (
    AdminApp,
    admin_ok,
    admin_parked,
    build,
    call,
    csrf,
    insert_log,
    insert_rows,
    login,
    task_row,
    wait_status,
)

USERS = [("admin", "pw")]
ROUTER = "/task-manager"
# Examples per operation and kind of case (positive, negative, steered): the whole file
# stays under a minute per database on a 2-core machine. Derandomized, so CI runs the
# same cases every time; raise it locally to fuzz harder.
FUZZ_EXAMPLES = 25
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


# -- the app under test ---------------------------------------------------------------------


@dataclass
class Env:
    """A logged-in client of an app with the dashboard, the JSON API and the management
    router, and the ids of the tasks and schedules seeded into it."""

    built: AdminApp
    client: TestClient
    headers: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def manager(self) -> TaskManager:
        return self.built.manager


def open_env(db_url: str) -> Iterator[Env]:
    """The app of :func:`tests.admin_support.build` with a login, the management router
    on ``/task-manager``, and a few tasks and a dynamic schedule."""
    built = build(db_url, auth=USERS)
    built.app.include_router(built.manager.get_manager_router(), prefix=ROUTER)
    # A crash is a 500 answer to check (not an exception that ends the test).
    with TestClient(built.app, raise_server_exceptions=False) as client:
        assert login(client).status_code == 303
        env = Env(built=built, client=client, headers=csrf(client))
        # The failed task's function succeeds when retried: replaying every failure
        # again and again (as a fuzzer does) must not double the failures each time.
        failed = task_row(func_name="admin_ok", status="failed", error="RuntimeError: boom")
        call(client, insert_rows, built.manager, [failed])
        env.ids["failed"] = failed["id"]
        env.ids["success"] = call(client, built.manager.enqueue, admin_ok, 2)
        env.ids["pending"] = call(client, built.manager.enqueue, admin_parked)
        wait_status(client, built.manager, env.ids["success"])
        created = client.post(
            "/tasks/schedules",
            json={
                "task_group_name": "reports",
                "function_name": "admin_report",
                "cron_expression": "0 9 * * MON",
                "kwargs": {"team": "ops"},
                "name": "weekly ops",
            },
            headers=env.headers,
        )
        assert created.status_code == 201, created.text
        yield env


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    yield from open_env(db_url)


def assert_json_error(response: Any, what: str = "") -> str:
    """The response is a JSON error with a human message; returns the message."""
    where = f"{what} -> {response.status_code}: {response.text[:300]!r}"
    assert response.status_code < 500, where
    assert response.headers.get("content-type", "").startswith("application/json"), where
    detail = response.json().get("detail")
    if isinstance(detail, list):
        assert detail, where
        messages = [item.get("msg") for item in detail]
        assert all(isinstance(text, str) and text for text in messages), where
        return " ".join(f"{item.get('loc')}: {item['msg']}" for item in detail)
    assert isinstance(detail, str) and detail.strip(), where
    return detail


# -- 1. fuzzing from the OpenAPI schema ------------------------------------------------------


def steered(schema: dict[str, Any], env: Env) -> dict[str, Any]:
    """A copy of the app's OpenAPI schema whose parameters take values that reach past
    the first check (existing task ids and schedule names, valid statuses, units,
    windows, crons and kwargs), so that the fuzzer also exercises the handlers and the
    store, not only their 404s and 422s. The other parameters stay free."""
    schema = json.loads(json.dumps(schema))
    names = ["weekly ops", "hourly_report"]
    parameters: dict[str, dict[str, Any]] = {
        "task_id": {"enum": list(env.ids.values())},
        "name": {"enum": names},
        "task_name": {"enum": names},
        "task_group_name": {"enum": ["reports"]},
        "status": {"enum": ["failed", "pending", "success,failed", "failed,interrupted"]},
        "sort": {"enum": ["created", "started", "finished", "duration"]},
        "source": {"enum": ["manual", "scheduled", "retry"]},
        "unit": {"enum": ["min", "hour", "day"]},
        "since": {"type": "string", "pattern": r"^([0-9]{1,7}[mhd]|all)$"},
        "until": {"type": "string", "format": "date-time"},
        "tag": {"type": "string", "pattern": r"^[a-z\"\\'%_]{1,3}=.{0,3}$"},
    }
    properties: dict[str, dict[str, Any]] = {
        "task_group_name": {"enum": ["reports"]},
        "function_name": {"enum": ["admin_report"]},
        "cron_expression": {
            "enum": ["0 9 * * MON", "*/5 * * * *", "0 0 29 2 *", "59 23 31 12 *", "0 0 1 1 0"]
        },
        "every": {"type": "null"},
        "timezone": {"enum": ["UTC", "Europe/Paris", "Asia/Kolkata", "America/St_Johns"]},
        "kwargs": {
            "type": "object",
            "properties": {"team": {"type": "string"}, "weeks": {"type": "integer"}},
            "required": ["team"],
            "additionalProperties": False,
        },
        "task_ids": {"type": "array", "items": {"enum": list(env.ids.values())}},
    }
    for operation in (op for item in schema["paths"].values() for op in item.values()):
        for parameter in operation.get("parameters", []):
            parameter["schema"] = parameters.get(parameter["name"], parameter["schema"])
    for model in schema["components"]["schemas"].values():
        hinted = [name for name in model.get("properties", {}) if name in properties]
        for name in hinted:
            model["properties"][name] = properties[name]
        if hinted:
            model["required"] = sorted({*model.get("required", []), *hinted})
            model["additionalProperties"] = False
    return schema


def send(client: TestClient, case: Any, headers: dict[str, str]) -> Any:
    """Send a schemathesis case through the app's TestClient (the app's own event loop,
    where the manager and its database connections live), byte for byte as
    schemathesis serialises it."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        json=kwargs.get("json"),
        data=kwargs.get("data"),
        cookies=kwargs.get("cookies"),
    ).prepare()
    return client.request(
        prepared.method, prepared.url, headers=dict(prepared.headers), content=prepared.body
    )


def fuzz(env: Env) -> tuple[dict[str, int], list[str]]:
    """Fuzz every operation of the app's schema: positive and negative cases of the
    schema as it is, and positive cases of the :func:`steered` schema. Returns the
    number of requests per operation and the failures."""
    plain = env.built.app.openapi()
    runs = [
        ("as is", plain, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)),
        ("steered", steered(plain, env), (GenerationMode.POSITIVE,)),
    ]
    sent: dict[str, int] = {}
    failures: list[str] = []
    for kind, raw, modes in runs:
        for result in schemathesis.openapi.from_dict(raw).get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            sent.setdefault(label, 0)
            definition = raw["paths"][operation.path][operation.method]
            for mode in modes:
                negative = mode is GenerationMode.NEGATIVE
                if not has_input(definition, negative=negative) and (negative or kind != "as is"):
                    continue  # nothing to vary: called once, as is
                try:
                    fuzz_operation(env, operation, mode, label, sent)
                except Unsatisfiable:
                    pass  # every generated negative case was filtered out as not negative
                except Exception as exc:
                    failures.append(f"{label} ({kind}, {mode.value}): {str(exc)[:600]}")
    return sent, failures


def has_input(operation: dict[str, Any], *, negative: bool) -> bool:
    """True when the operation takes input; for negative cases, input with a type to
    break (a body or a query parameter: any text is a valid path parameter)."""
    parameters = operation.get("parameters", [])
    if negative:
        parameters = [item for item in parameters if item["in"] == "query"]
    return bool(parameters) or "requestBody" in operation


def fuzz_operation(
    env: Env, operation: Any, mode: GenerationMode, label: str, sent: dict[str, int]
) -> None:
    """Send ``FUZZ_EXAMPLES`` cases of one operation and check every answer."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = send(env.client, case, env.headers)
        sent[label] += 1
        what = f"{label} {response.request.url} {case.body!r:.200}"
        if response.status_code >= 400:
            assert_json_error(response, what)
        else:
            assert response.headers["content-type"].startswith("application/json"), what

    check()


# The management router has 16 operations (fastapi-task-manager's full surface): fuzzing
# them all takes longer than the default per-test timeout on a busy machine.
@pytest.mark.timeout(360)
def test_fuzzed_management_router_and_json_api_never_answer_5xx(env):
    sent, failures = fuzz(env)
    assert not failures, "\n\n".join(failures)
    assert len(sent) >= 24, sorted(sent)  # 17 JSON API operations, 7 of the router
    assert all(count > 0 for count in sent.values()), sent
    assert any(path.startswith(f"GET {ROUTER}") for path in sent)


# The dashboard's pages are not in the OpenAPI schema (they read their filters from the
# query string by hand), so hypothesis draws their query strings: every filter the pages
# read, with text that mixes valid values, wildcards, quotes, numbers, unicode and NUL.
PAGE_PARAMS = (
    "status", "func", "func_name", "queue", "tag", "source", "window", "since", "until",
    "q", "sort", "after", "before", "limit", "level", "task", "fp",
)  # fmt: skip
PAGE_URLS = (
    "/tasks/dashboard",
    "/tasks/dashboard/runs",
    "/tasks/dashboard/failures",
    "/tasks/dashboard/_/runs",
    "/tasks/dashboard/_/failures",
    "/tasks/dashboard/logs",
    "/tasks/dashboard/audit",
    "/tasks/dashboard/schedules",
    "/tasks/dashboard/functions",
    "/tasks/dashboard/instances",
)
PAGE_VALUES = st.one_of(
    st.sampled_from(["failed", "pending,running", "6h", "999999d", "duration", "0", "-1"]),
    st.sampled_from(["k=v", "%", "_", "\\", "'", '"', "' OR 1=1 --", "9" * 30, "\x00"]),
    st.from_regex(r"\A[0-9]{1,7}[mhd]\Z"),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.text(max_size=30),
)


def test_fuzzed_dashboard_pages_never_answer_5xx(env):
    seen: dict[int, int] = {}

    @settings(FUZZ_SETTINGS, max_examples=400)
    @given(
        url=st.sampled_from(PAGE_URLS),
        params=st.dictionaries(st.sampled_from(PAGE_PARAMS), PAGE_VALUES, max_size=4),
    )
    def check(url: str, params: dict[str, str]) -> None:
        response = env.client.get(url, params=params)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        what = f"{url} {params!r:.200} -> {response.status_code}"
        assert response.status_code < 500, what
        if response.status_code >= 400:
            assert_refused(response, what)

    check()
    assert seen.get(200, 0) > 20, seen


# -- 2. malformed input on every surface ----------------------------------------------------

PAGES = ("/tasks/dashboard/runs", "/tasks/dashboard/failures", "/tasks/dashboard/_/runs")
# Valid cron fields, but longer than the 255 characters the schedules table holds.
LONG_CRON = " ".join(
    [",".join(map(str, range(first, last))) for first, last in ((0, 60), (0, 24), (1, 32))]
    + ["*", "*"]
)
BAD_SCHEDULES: list[tuple[str, Any]] = [
    ("cron", "not cron"),
    ("cron", "0 25 * * *"),
    ("cron", "* * * *"),
    ("cron", "* * * * * *"),
    ("cron", "0 0 30 2 *"),  # February 30th: valid fields, no such date
    ("cron", "0 0 31 2 *"),
    ("cron", "@reboot"),
    ("cron", "*/0 * * * *"),
    ("cron", "0 9 * * MON\x00"),
    ("cron", "0 9 * * ☃"),
    ("cron", LONG_CRON),
    ("timezone", "Moon/Base"),
    ("timezone", "../../etc/passwd"),
    ("timezone", "/etc/localtime"),
    ("timezone", "UTC\x00"),
    ("timezone", "Europe/" + "x" * 300),
    ("timezone", "a" * 5000),  # longer than a file name may be
    ("timezone", "Etc/GMT+20"),
    ("every", 0),
    ("every", -1),
    ("every", 4e9),  # over 100 years
    ("every", 1e308),
    ("every", math.inf),  # JSON "Infinity", which Python's json module reads
    ("name", "\x00"),
    ("name", "x" * 256),
    ("description", "ops\x00"),
]
# Retry settings exist in the management router only.
BAD_RETRY_SETTINGS: list[tuple[str, Any]] = [
    ("retries", 2**40),
    ("retries", -1),
    ("retry_backoff", 1e300),
    ("retry_backoff_max", math.inf),
]
API_FIELD = {"cron": "cron_expression"}


def schedule_change(field_name: str, value: Any) -> dict[str, Any]:
    if field_name == "every":
        return {"cron_expression": None, "every": value}
    return {API_FIELD.get(field_name, field_name): value}


def schedule_body(field_name: str, value: Any) -> bytes:
    body = {
        "task_group_name": "reports",
        "function_name": "admin_report",
        "cron_expression": "0 9 * * MON",
        "kwargs": {"team": "ops"},
        **schedule_change(field_name, value),
    }
    return json.dumps(body).encode()  # infinity as the JSON extension "Infinity"


def schedule_form(field_name: str, value: Any) -> dict[str, str]:
    form = {
        "function": "reports.admin_report",
        "trigger": "every" if field_name == "every" else "cron",
        "cron": "0 9 * * MON",
        "every": "",
        "timezone": "UTC",
        "kwargs": '{"team": "ops"}',
        "name": "",
        "description": "",
    }
    form[field_name] = str(value)
    return form


def schedule_names(env: Env) -> list[str]:
    return sorted(item["name"] for item in env.client.get(f"{ROUTER}/tasks").json())


@pytest.mark.parametrize("surface", ["router", "api", "form"])
def test_bad_cron_timezone_interval_and_names_get_422_with_a_message(env, surface):
    client = env.client
    before = schedule_names(env)
    cases = BAD_SCHEDULES + (BAD_RETRY_SETTINGS if surface == "router" else [])
    for field_name, value in cases:
        what = f"{surface} {field_name}={value!r:.60}"
        json_headers = {**env.headers, "content-type": "application/json"}
        if surface == "router":
            response = client.post(
                f"{ROUTER}/tasks", content=schedule_body(field_name, value), headers=json_headers
            )
            if field_name == "cron":  # fastapi-task-manager answers 400 for a bad cron
                assert response.status_code == 400, what
                assert "cron" in response.json()["detail"], what
                continue
            assert response.status_code == 422, what
            assert_json_error(response, what)
            location = [item["loc"] for item in response.json()["detail"]]
            assert ["body", API_FIELD.get(field_name, field_name)] in location, (what, location)
        elif surface == "api":
            response = client.post(
                "/tasks/schedules", content=schedule_body(field_name, value), headers=json_headers
            )
            assert response.status_code == 422, what
            message = assert_json_error(response, what)
            assert field_name in message or field_name.replace("_", " ") in message, what
        else:
            response = client.post(
                "/tasks/dashboard/schedules",
                data=schedule_form(field_name, value),
                headers=env.headers,
            )
            assert response.status_code == 422, what
            assert response.headers["content-type"].startswith("text/html"), what
            assert 'id="schedule-form-error"' in response.text, what
            assert "Traceback" not in response.text, what
    assert schedule_names(env) == before  # nothing was stored


BAD_IDS = [
    "nope",
    "0" * 32,
    "f" * 33,
    "x" * 2000,
    "'; DROP TABLE taskflow_tasks; --",
    "ü✓𝄞\u202e",
    " ",
    "a/b",
    "\x00",
    "id\x00",
]


def quoted(value: str) -> str:
    return quote(value, safe="")


def assert_refused(response: Any, what: str) -> None:
    """A 4xx JSON error with a message, or a 4xx HTML page (never a traceback)."""
    assert 400 <= response.status_code < 500, f"{what} -> {response.status_code}"
    if response.headers.get("content-type", "").startswith("application/json"):
        assert_json_error(response, what)
    else:
        assert response.headers["content-type"].startswith("text/html"), what
        assert "Traceback" not in response.text, what


def assert_flashed_error(client: TestClient, response: Any, what: str) -> None:
    """A dashboard action answered with a redirect that shows an error message.

    The flash cookie is read from the redirect's own ``Set-Cookie`` header and sent
    back by hand: HTTP clients may drop cookies set by a response to a very long URL
    (httpx ignores them past 1,024 bytes of path), and what is tested here is the
    server's answer, not a client's cookie jar."""
    if response.status_code != 303:
        assert_refused(response, what)
        return
    flash = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        flash.load(header)
    assert FLASH_COOKIE in flash, f"{what}: the redirect sets no flash cookie"
    cookies = {**dict(client.cookies.items()), FLASH_COOKIE: flash[FLASH_COOKIE].value}
    page = client.get(
        response.headers["location"],
        headers={"cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())},
    )
    assert page.status_code < 500, what
    assert 'class="flash error"' in page.text, what


def test_unknown_and_malformed_task_ids_get_4xx_everywhere(env):
    client = env.client
    for task_id in BAD_IDS:
        path = quoted(task_id)
        for method, url in (
            ("GET", f"/tasks/{path}"),
            ("POST", f"/tasks/{path}/retry"),
            ("POST", f"/tasks/{path}/cancel"),
            ("DELETE", f"/tasks/{path}"),
            ("GET", f"/tasks/dashboard/runs/{path}"),
            ("GET", f"/tasks/dashboard/_/runs/{path}"),
        ):
            what = f"{method} {url[:80]}"
            assert_refused(client.request(method, url, headers=env.headers), what)
        logs = client.get(f"/tasks/dashboard/_/runs/{path}/logs")
        assert logs.status_code < 500 and "Traceback" not in logs.text, task_id
        for verb in ("retry", "cancel", "delete"):
            response = client.post(
                f"/tasks/dashboard/runs/{path}/{verb}", headers=env.headers, follow_redirects=False
            )
            assert_flashed_error(client, response, f"dashboard {verb} {task_id!r:.40}")
    statuses = client.get("/tasks", params={"limit": 500}).json()
    assert {env.ids["failed"], env.ids["success"], env.ids["pending"]} <= {
        item["task_id"] for item in statuses
    }


def test_unknown_and_malformed_schedule_names_get_4xx_everywhere(env):
    client = env.client
    for name in BAD_IDS:
        for verb in ("pause", "resume", "trigger"):
            response = client.post(f"{ROUTER}/tasks/{verb}", params={"task_name": name})
            assert response.status_code == 404, (verb, name)
            assert_json_error(response, f"router {verb} {name!r:.40}")
        response = client.delete(
            f"{ROUTER}/tasks", params={"task_group_name": "reports", "task_name": name}
        )
        assert response.status_code == 404, name
        assert_json_error(response, f"router delete {name!r:.40}")
        path = quoted(name)
        for method, url in (
            ("POST", f"/tasks/schedules/{path}/trigger"),
            ("POST", f"/tasks/schedules/{path}/pause"),
            ("POST", f"/tasks/schedules/{path}/resume"),
            ("DELETE", f"/tasks/schedules/{path}"),
        ):
            assert_refused(client.request(method, url, headers=env.headers), f"{method} {url}")
        for verb in ("run", "pause", "resume", "delete"):
            response = client.post(
                f"/tasks/dashboard/schedules/{path}/{verb}",
                headers=env.headers,
                follow_redirects=False,
            )
            assert_flashed_error(client, response, f"dashboard schedule {verb} {name!r:.40}")
    assert schedule_names(env) == ["hourly_report", "weekly ops"]


def cursor(*parts: Any) -> str:
    """A page cursor as the dashboard writes them (base64 of a JSON list)."""
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def raw_cursor(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


BAD_CURSORS = [
    "garbage",
    "%%%",
    "=",
    "ü",
    cursor(1, 2, 3),
    cursor(None, None),
    cursor("2024-01-01T00:00:00", "abc"),  # no UTC offset
    cursor("0001-01-01T00:00:00+05:00", "abc"),  # before year 1 in UTC
    cursor("2024-01-01T00:00:00+00:00", "a\x00b"),
    cursor("2024-01-01T00:00:00+00:00", 5),
    raw_cursor(b"[" * 5000),
    raw_cursor(b"\xff\xfe"),
]
BAD_DURATION_CURSORS = [
    cursor("NaN", "abc"),
    cursor("1e999", "abc"),
    cursor("2024-01-01T00:00:00+00:00", "abc"),  # a cursor of another sort order
]
# (query parameters, a word of the message)
BAD_QUERIES: list[tuple[dict[str, str], str]] = [
    *[({"after": value}, "cursor") for value in BAD_CURSORS],
    *[({"before": value}, "cursor") for value in BAD_CURSORS],
    *[({"sort": "duration", "after": value}, "cursor") for value in BAD_DURATION_CURSORS],
    *[({"limit": value}, "limit") for value in ("0", "-1", "501", "abc", "1e3", "9" * 30, "1.5")],
    ({"status": "bogus"}, "status"),
    ({"status": "FAILED"}, "status"),
    ({"status": "failed,bogus"}, "status"),
    ({"status": "failed;drop"}, "status"),
    ({"source": "bogus"}, "source"),
    ({"sort": "bogus"}, "sort"),
    ({"tag": "novalue"}, "tag"),
    ({"since": "yesterday"}, "time"),
    ({"since": "999999d"}, "window"),  # 2,700 years back: before year 1
    ({"since": "9999999d"}, "time"),
    ({"since": "0001-01-01T00:00:00+05:00"}, "time"),
    ({"until": "9999-12-31T23:59:59-05:00"}, "time"),
    ({"window": "999999d"}, "window"),
]


def test_garbage_cursors_limits_and_filters_get_4xx_or_the_pages_error(env):
    client = env.client
    for params, word in BAD_QUERIES:
        what = f"GET /tasks {params!r:.120}"
        response = client.get("/tasks", params=params)
        assert response.status_code in (400, 422), what
        assert word in assert_json_error(response, what), what
        for page in PAGES:
            shown = client.get(page, params=params)
            assert shown.status_code == 200, f"{page} {params!r:.100}"
            assert 'class="banner error"' in shown.text, f"{page} {params!r:.100}"
    for page in ("/tasks", *PAGES):  # there is no page number: it is ignored
        assert client.get(page, params={"page": "-9" * 20}).status_code == 200, page
    response = client.post("/tasks/retry-failed", params={"since": "999999d"}, headers=env.headers)
    assert response.status_code == 400 and "window" in assert_json_error(response)
    for params in ({"before": "abc"}, {"before": "9" * 30}, {"before": "-1"}):
        page = client.get("/tasks/dashboard/logs", params=params)
        assert page.status_code == 200 and 'class="banner error"' in page.text, params
    for params in ({"window": "999999d"}, {"window": "bogus"}):
        page = client.get("/tasks/dashboard/logs", params=params)
        assert page.status_code == 200 and 'class="banner error"' in page.text, params
    for value in ("abc", "9" * 30, "-5"):
        assert_refused(client.get("/tasks/audit", params={"before": value}), f"audit {value}")
        page = client.get("/tasks/dashboard/audit", params={"before": value})
        assert_refused(page, f"dashboard audit {value}")
        tail = client.get(
            f"/tasks/dashboard/_/runs/{env.ids['success']}/logs", params={"after": value}
        )
        assert_refused(tail, f"log tail after={value}")
    for value, unit in (("abc", "day"), (str(10**30), "day"), ("1000000", "day"), ("0", "day")):
        response = client.delete(
            "/tasks/history", params={"value": value, "unit": unit}, headers=env.headers
        )
        assert response.status_code in (400, 422), value
        assert_json_error(response, f"history {value} {unit}")


UNICODE_TEXT = ["ü✓𝄞", "\u202eevil", "日本語テキスト", "\U0010ffff", "a" * 5000]


def test_unicode_and_nul_in_search_fields(env):
    client = env.client
    for text in UNICODE_TEXT:
        for params in ({"q": text}, {"func_name": text}, {"queue": text}, {"tag": f"k={text}"}):
            response = client.get("/tasks", params=params)
            assert response.status_code == 200 and response.json() == [], params
            for page in PAGES:
                assert client.get(page, params=params).status_code == 200, (page, params)
        for key in ("q", "level", "func", "task"):
            page = client.get("/tasks/dashboard/logs", params={key: text})
            assert page.status_code == 200 and "Traceback" not in page.text, (key, text)
        listed = client.get(f"{ROUTER}/tasks", params={"task_group_name": text})
        assert listed.status_code == 200 and listed.json() == []
        functions = client.get(f"{ROUTER}/functions", params={"task_group_name": text})
        assert functions.status_code == 200 and functions.json()["count"] == 0
    for params in ({"q": "a\x00b"}, {"func_name": "\x00"}, {"queue": "\x00"}, {"tag": "k=\x00"}):
        response = client.get("/tasks", params=params)
        assert response.status_code == 400 and "NUL" in assert_json_error(response), params
        for page in (*PAGES, "/tasks/dashboard/logs"):
            assert_refused(client.get(page, params={"q": "\x00"}), page)
    listed = client.get(f"{ROUTER}/tasks", params={"task_group_name": "\x00"})
    assert listed.status_code == 200 and listed.json() == []


# -- the bugs the fuzzer and the tests above found, one regression test each ----------------


def _post_schedule(env: Env, **change: Any) -> Any:
    body = {
        "task_group_name": "reports",
        "function_name": "admin_report",
        "cron_expression": "0 9 * * MON",
        "kwargs": {"team": "ops"},
        **change,
    }
    headers = {**env.headers, "content-type": "application/json"}
    return env.client.post(f"{ROUTER}/tasks", content=json.dumps(body), headers=headers)


def _login_with_nul(env: Env) -> Any:
    env.client.cookies.clear()
    token = env.client.get("/tasks/auth/session").json()["csrf_token"]
    return env.client.post(
        "/tasks/auth/login",
        data={"username": "admin\x00", "password": "pw", "csrf_token": token},
        follow_redirects=False,
    )


# (what is sent, the status expected, a word of the message). Before the fixes each of
# these answered 500 (an exception), or 503 on PostgreSQL ("task could not be stored"
# with the driver's error and the SQL), or stored a schedule that could never fire.
REGRESSIONS: dict[str, tuple[Any, int, str]] = {
    "audit cursor beyond 64 bits": (
        lambda env: env.client.get("/tasks/audit", params={"before": 2**63}),
        422,
        "less than or equal",
    ),
    "dashboard audit cursor beyond 64 bits": (
        lambda env: env.client.get("/tasks/dashboard/audit", params={"before": 2**64}),
        422,
        "less than or equal",
    ),
    "log tail cursor beyond 64 bits": (
        lambda env: env.client.get(
            f"/tasks/dashboard/_/runs/{env.ids['success']}/logs", params={"after": 10**20}
        ),
        422,
        "less than or equal",
    ),
    "bulk retry of an id with NUL": (
        lambda env: env.client.post("/tasks/bulk-retry", json=["\x00"], headers=env.headers),
        200,
        "",
    ),
    "history older than year 1": (
        lambda env: env.client.delete(
            # the most days a timedelta holds: before year 1 whatever today's date is
            "/tasks/history",
            params={"value": 999_999_999, "unit": "day"},
            headers=env.headers,
        ),
        400,
        "too long ago",
    ),
    "cron on February 30th": (
        lambda env: _post_schedule(env, cron_expression="0 0 30 2 *"),
        400,  # fastapi-task-manager's status for a cron that cannot be used
        "never fires",
    ),
    "timezone longer than a file name": (
        lambda env: _post_schedule(env, timezone="a" * 5000),
        422,
        "unknown timezone",
    ),
    "interval of 1e308 seconds": (
        lambda env: _post_schedule(env, cron_expression=None, every=1e308),
        422,
        "100 years",
    ),
    "schedule name with NUL": (
        lambda env: _post_schedule(env, name="a\x00b"),
        422,
        "NUL",
    ),
    "schedule name over 255 characters": (
        lambda env: _post_schedule(env, name="n" * 256),
        422,
        "255",
    ),
    "cron over 255 characters": (
        lambda env: _post_schedule(env, cron_expression=LONG_CRON),
        400,
        "255",
    ),
    "description with NUL": (
        lambda env: _post_schedule(env, description="\x00"),
        422,
        "NUL",
    ),
    "retries beyond an INTEGER column": (
        lambda env: _post_schedule(env, retries=2**31),
        422,
        "retries",
    ),
    "retry delay of 1e300 seconds": (
        lambda env: _post_schedule(env, retry_backoff=1e300),
        422,
        "retry_backoff",
    ),
    "router pause of a name with NUL": (
        lambda env: env.client.post(f"{ROUTER}/tasks/pause", params={"task_name": "\x00"}),
        404,
        "no schedule",
    ),
    "router delete of a name with NUL": (
        lambda env: env.client.delete(
            f"{ROUTER}/tasks", params={"task_group_name": "reports", "task_name": "\x00"}
        ),
        404,
        "not found",
    ),
    "task id with NUL": (
        lambda env: env.client.get(f"/tasks/{quote(chr(0))}"),
        400,
        "NUL",
    ),
    "search with NUL": (
        lambda env: env.client.get("/tasks", params={"q": "\x00"}),
        400,
        "NUL",
    ),
    "replay form filter with NUL": (
        lambda env: env.client.post(
            "/tasks/dashboard/failures/replay",
            data={"scope": "all", "func": "\x00"},
            headers=env.headers,
            follow_redirects=False,
        ),
        303,
        "",
    ),
    "window reaching before year 1": (
        lambda env: env.client.get("/tasks", params={"since": "999999d"}),
        400,
        "window",
    ),
    "retry-failed window reaching before year 1": (
        lambda env: env.client.post(
            "/tasks/retry-failed", params={"since": "999999d"}, headers=env.headers
        ),
        400,
        "window",
    ),
    "time whose offset leaves the calendar": (
        lambda env: env.client.get("/tasks", params={"since": "0001-01-01T00:00:00+05:00"}),
        400,
        "time",
    ),
    "cursor without UTC offset": (
        lambda env: env.client.get(
            "/tasks", params={"after": cursor("2024-01-01T00:00:00", "abc")}
        ),
        400,
        "cursor",
    ),
    "cursor before year 1 in UTC": (
        lambda env: env.client.get(
            "/tasks", params={"after": cursor("0001-01-01T00:00:00+05:00", "abc")}
        ),
        400,
        "cursor",
    ),
    "cursor with NUL in its id": (
        lambda env: env.client.get(
            "/tasks", params={"after": cursor("2024-01-01T00:00:00+00:00", "\x00")}
        ),
        400,
        "cursor",
    ),
    "cursor nested 5000 deep": (
        lambda env: env.client.get("/tasks", params={"after": raw_cursor(b"[" * 5000)}),
        400,
        "cursor",
    ),
    "login with NUL in the user name": (_login_with_nul, 401, ""),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_regression(env, name):
    send_it, status, word = REGRESSIONS[name]
    response = send_it(env)
    assert response.status_code == status, f"{name}: {response.status_code} {response.text[:300]}"
    if status == 303:
        assert_flashed_error(env.client, response, name)
    elif response.headers["content-type"].startswith("application/json") and status >= 400:
        assert word in assert_json_error(response, name), name
    elif status >= 400:
        assert "Traceback" not in response.text


# -- 3. SQL injection through every filter and search field -------------------------------

INJECTIONS = [
    "' OR 1=1 --",
    "' OR '1'='1",
    '" OR ""="',
    '"; DROP TABLE taskflow_tasks; --',
    "'; DROP TABLE taskflow_tasks; --",
    "1; DELETE FROM taskflow_tasks",
    "') OR ('1'='1",
    "' UNION SELECT id FROM taskflow_tasks --",
    "%' --",
    "%",
    "_",
    "\\",
    "%%",
    "_%",
    "\\%",
    "\\_",
    "[a-z]%",
    "*",
    "$1",
    ":name",
    "?",
]
# Rows whose text holds the LIKE wildcards and quotes literally.
LITERAL_ROWS = [
    {"func_name": "alpha", "status": "failed", "error": "100% done", "tags": {"k": "v"}},
    {"func_name": "beta", "status": "failed", "error": "snake_case failure", "tags": {'a"b': "x"}},
    {"func_name": "gamma", "status": "success", "tags": {"pct": "%"}},
    {"func_name": "delta", "status": "failed", "error": "back\\slash error", "queue": "q_1"},
    {"func_name": "epsilon", "status": "failed", "error": "it's quoted"},
    {"func_name": "zeta", "status": "interrupted", "error": "plain error"},
]
LOG_LINES = ["100% of lines", "under_score line", "back\\slash line", "it's a line"]
TASK_LINK = re.compile(
    r'href="/tasks/dashboard/runs/([0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})"'
)


async def table_counts(manager: Any) -> dict[str, int]:
    """Rows in each table that an injection could drop or empty."""
    async with manager.db.read() as conn:
        return {
            table.name: int(await conn.scalar(sa.select(sa.func.count()).select_from(table)))
            for table in (tasks, task_logs, schedules)
        }


async def all_tasks(manager: Any) -> list[Any]:
    query = sa.select(tasks.c.id, tasks.c.func_name, tasks.c.error, tasks.c.queue, tasks.c.tags)
    query = query.add_columns(tasks.c.status)
    async with manager.db.read() as conn:
        return list((await conn.execute(query)).mappings())


def searched(rows: list[Any], text: str) -> set[str]:
    """What a search for ``text`` finds: the documented meaning, in Python."""
    text = text.strip().lower()
    return {
        row["id"]
        for row in rows
        if row["id"] == text
        or row["id"].startswith(text)
        or text in row["func_name"].lower()
        or text in (row["error"] or "").lower()
    }


def tagged(rows: list[Any], tag: str) -> set[str]:
    key, _, value = tag.partition("=")
    return {row["id"] for row in rows if (row["tags"] or {}).get(key.strip()) == value.strip()}


def listed_ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text[:300]
    return {item["task_id"] for item in response.json()}


def page_ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text[:300]
    return set(TASK_LINK.findall(response.text))


def test_sql_injection_through_every_filter_is_inert(env):
    client, manager = env.client, env.manager
    seeded = [task_row(**row) for row in LITERAL_ROWS]
    call(client, insert_rows, manager, seeded)
    for message in LOG_LINES:
        call(client, insert_log, manager, seeded[0]["id"], message)
    ids = {row["func_name"]: row["id"] for row in seeded}
    rows = call(client, all_tasks, manager)
    before = call(client, table_counts, manager)
    failed = {row["id"] for row in rows if row["status"] in ("failed", "interrupted")}

    # LIKE wildcards and the escape character match themselves.
    assert listed_ids(client.get("/tasks", params={"q": "%"})) == {ids["alpha"]}
    assert listed_ids(client.get("/tasks", params={"q": "\\"})) == {ids["delta"]}
    underscored = listed_ids(client.get("/tasks", params={"q": "_", "limit": 500}))
    assert ids["beta"] in underscored and ids["alpha"] not in underscored
    assert listed_ids(client.get("/tasks", params={"tag": "pct=%"})) == {ids["gamma"]}
    assert listed_ids(client.get("/tasks", params={"tag": 'a"b=x'})) == {ids["beta"]}
    assert listed_ids(client.get("/tasks", params={"queue": "q_1"})) == {ids["delta"]}
    assert listed_ids(client.get("/tasks", params={"queue": "q%1"})) == set()

    for text in INJECTIONS:
        what = repr(text)
        api = {"limit": "500"}
        assert listed_ids(client.get("/tasks", params={**api, "q": text})) == searched(rows, text)
        for key in ("func_name", "queue"):
            assert listed_ids(client.get("/tasks", params={**api, key: text})) == set(), what
        for tag in (f"k={text}", f"{text}=v"):
            if tag.partition("=")[0].strip():
                found = listed_ids(client.get("/tasks", params={**api, "tag": tag}))
                assert found == tagged(rows, tag), what
        for key in ("status", "source", "sort", "since", "until", "after", "before"):
            response = client.get("/tasks", params={key: text})
            assert response.status_code == 400, (key, what)
            assert_json_error(response, f"{key}={what}")
        assert page_ids(client.get(PAGES[0], params={"q": text})) == searched(rows, text), what
        assert page_ids(client.get(PAGES[1], params={"q": text})) == searched(rows, text) & failed
        for key in ("func", "queue"):
            assert page_ids(client.get(PAGES[0], params={key: text})) == set(), (key, what)
        tag_page = client.get(PAGES[0], params={"tag": f"k={text}"})
        assert page_ids(tag_page) == tagged(rows, f"k={text}"), what
        logs = client.get("/tasks/dashboard/logs", params={"q": text})
        assert logs.status_code == 200, what
        shown = {line for line in LOG_LINES if html.escape(line, quote=False) in logs.text}
        assert shown == {line for line in LOG_LINES if text.strip().lower() in line.lower()}, what
        for key in ("level", "func", "task"):
            logs = client.get("/tasks/dashboard/logs", params={key: text})
            assert logs.status_code == 200, (key, what)
            assert not any(html.escape(line, quote=False) in logs.text for line in LOG_LINES)
        # The management router and the schedule routes look names up, never run them.
        assert client.get(f"{ROUTER}/tasks", params={"task_group_name": text}).json() == []
        functions = client.get(f"{ROUTER}/functions", params={"task_group_name": text})
        assert functions.json()["count"] == 0
        for verb in ("pause", "resume", "trigger"):
            response = client.post(f"{ROUTER}/tasks/{verb}", params={"task_name": text})
            assert response.status_code == 404, (verb, what)
        deleted = client.delete(
            f"{ROUTER}/tasks", params={"task_group_name": "reports", "task_name": text}
        )
        assert deleted.status_code == 404, what
        path = quoted(text)
        assert client.post(f"/tasks/schedules/{path}/pause", headers=env.headers).status_code == 404
        assert client.get(f"/tasks/{path}").status_code == 404, what
        replay = client.post(
            "/tasks/retry-failed", params={"since": "all", "func_name": text}, headers=env.headers
        )
        assert replay.json()["dispatched"] == 0, what
        bulk = client.post("/tasks/bulk-retry", json=[text], headers=env.headers)
        assert bulk.json() == {"dispatched": 0, "skipped": 1, "results": []}, what

    # Every table is still there with every row (no retry ran, nothing was deleted).
    assert call(client, table_counts, manager) == before
    assert schedule_names(env) == ["hourly_report", "weekly ops"]


TAG_KEYS = ['a"b', "a\\b", "ü", '"', "a.b", "$", "' OR 'a'<'b' --"]


def test_tag_filter_matches_keys_with_quotes_backslashes_and_unicode(env):
    """Regression: on SQLite the tag filter went through a JSON path, which finds
    nothing for a key with a quote, a backslash or a non-ASCII letter, and fails (503)
    for the key ``"``."""
    rows = [task_row(func_name="tagged", tags={key: "v", "other": key}) for key in TAG_KEYS]
    call(env.client, insert_rows, env.manager, rows)
    for row, key in zip(rows, TAG_KEYS, strict=True):
        for tag in (f"{key}=v", f"other={key}"):
            assert listed_ids(env.client.get("/tasks", params={"tag": tag})) == {row["id"]}, tag
        page = env.client.get("/tasks/dashboard/runs", params={"tag": f"{key}=v"})
        assert page_ids(page) == {row["id"]}, key


# -- 4. encrypted arguments and results stay hidden ------------------------------------------

CARD = "4111-1111-1111-1111"
RECEIPT = "receipt-7f3a9c51"


def secret_charge(card: str, amount: int = 1) -> dict[str, str]:
    """Its argument and its result are secrets (neither key is a redacted one)."""
    task_log("charging", level="info", amount=amount)
    return {"receipt": RECEIPT}


def secret_parked(card: str) -> None:
    """On a queue nothing serves: stays pending with its encrypted argument."""


def encrypted_app(db_url: str, keys: list[bytes], **admin_options: Any) -> AdminApp:
    manager = TaskManager(
        database_url=db_url,
        encrypt_args_key=keys,
        poll_interval=0.05,
        shutdown_timeout=2.0,
        heartbeat_interval=0.5,
    )
    manager.task()(secret_charge)
    manager.task(queue="parked")(secret_parked)
    app = FastAPI()
    admin = TaskAdmin(app, manager, auth=USERS, **admin_options)
    app.include_router(manager.get_manager_router(), prefix=ROUTER)
    return AdminApp(app=app, manager=manager, admin=admin)


def everything_shown(client: TestClient, task_ids: list[str]) -> dict[str, str]:
    """Every page, fragment and JSON answer that could show a task, by URL."""
    urls = [
        "/tasks/dashboard",
        "/tasks/dashboard/_/overview",
        "/tasks/dashboard/runs",
        "/tasks/dashboard/_/runs",
        "/tasks/dashboard/failures",
        "/tasks/dashboard/schedules",
        "/tasks/dashboard/logs",
        "/tasks/dashboard/functions",
        "/tasks/dashboard/instances",
        "/tasks/dashboard/audit",
        "/tasks",
        "/tasks/metrics",
        "/tasks/audit",
        "/tasks/schedules",
        f"{ROUTER}/tasks",
        f"{ROUTER}/functions",
    ]
    for task_id in task_ids:
        urls += [
            f"/tasks/{task_id}",
            f"/tasks/dashboard/runs/{task_id}",
            f"/tasks/dashboard/_/runs/{task_id}",
            f"/tasks/dashboard/_/runs/{task_id}/logs",
        ]
    shown = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code in (200, 204), (url, response.status_code)  # 204: no news
        shown[url] = response.text
    return shown


async def raw_values(manager: Any) -> str:
    async with manager.db.read() as conn:
        rows = await conn.execute(sa.select(tasks.c.payload, tasks.c.result))
        return " ".join(f"{row.payload} {row.result}" for row in rows)


@pytest.mark.parametrize("display", [False, True], ids=["hidden", "display_func_args"])
def test_encrypted_values_stay_out_of_pages_api_and_logs(db_url, caplog, display):
    caplog.set_level(logging.DEBUG)
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    # A task written with the old key, before the rotation.
    before = encrypted_app(db_url, [old_key])
    with TestClient(before.app) as client:
        old_id = call(client, before.manager.enqueue, secret_charge, CARD)
        wait_status(client, before.manager, old_id, "success")
    rotated = encrypted_app(db_url, [new_key, old_key], display_func_args=display)
    with TestClient(rotated.app) as client:
        assert login(client).status_code == 303
        new_id = call(client, rotated.manager.enqueue, secret_charge, CARD, amount=2)
        wait_status(client, rotated.manager, new_id, "success")
        parked_id = call(client, rotated.manager.enqueue, secret_parked, CARD)
        # The answers of actions carry the task too.
        headers = csrf(client)
        cancelled = client.post(f"/tasks/{parked_id}/cancel", headers=headers)
        retried = client.post(f"/tasks/{parked_id}/retry", headers=headers)
        assert cancelled.status_code == 200 and retried.status_code == 200, retried.text
        retry_id = retried.json()["task_id"]
        shown = everything_shown(client, [old_id, new_id, parked_id, retry_id])
        shown["cancel"], shown["retry"] = cancelled.text, retried.text
        stored = call(client, raw_values, rotated.manager)
        details = {task_id: client.get(f"/tasks/{task_id}").json() for task_id in (old_id, new_id)}
        listed = {item["task_id"]: item for item in client.get("/tasks").json()}

    assert CARD not in stored and RECEIPT not in stored  # encrypted at rest
    logged = [
        logging.Formatter().format(record) + repr(record.__dict__) for record in caplog.records
    ]
    assert logged and not [line for line in logged if CARD in line or RECEIPT in line]
    assert all(item["encrypted"] for item in listed.values())
    if not display:
        leaks = [url for url, text in shown.items() if CARD in text or RECEIPT in text]
        assert leaks == []
        assert all(body["args"] is None and body["result"] is None for body in details.values())
        assert "display_func_args=True" in shown[f"/tasks/dashboard/runs/{old_id}"]
        return
    # Asked for: both tasks, whichever key encrypted them, show their values, and so
    # does the retry of the cancelled one (decrypted, encrypted again with the new key).
    assert json.loads(shown["retry"])["task"]["args"] == [CARD]
    for task_id in (old_id, new_id):
        assert details[task_id]["args"] == [CARD]
        assert details[task_id]["result"] == {"receipt": RECEIPT}
        assert listed[task_id]["result"] == {"receipt": RECEIPT}
        page = shown[f"/tasks/dashboard/runs/{task_id}"]
        assert CARD in page and RECEIPT in page
    assert details[new_id]["kwargs"] == {"amount": 2}
    # Lists and the management router still never show them.
    for url in ("/tasks/dashboard/runs", "/tasks/dashboard/logs", f"{ROUTER}/tasks"):
        assert CARD not in shown[url] and RECEIPT not in shown[url], url
