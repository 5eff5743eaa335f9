"""The built wheel works on its own, away from the repository checkout.

Builds the wheel, checks it carries the migrations, alembic.ini and the ``taskflow``
console script, installs it (without dependencies) into a fresh virtual environment, and
from an unrelated working directory runs ``taskflow db upgrade`` / ``db check`` and a
task through ``TaskManager``.

The fresh environment borrows the dependencies of the interpreter running the tests: a
``.pth`` file lists that interpreter's site-packages folders as plain paths. A plain path
line only adds the folder to ``sys.path``; the ``.pth`` files inside it (an editable
install of this repository, for one) are not processed, so ``taskflow`` can only come
from the wheel.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = "Scripts" if os.name == "nt" else "bin"
EXE = ".exe" if os.name == "nt" else ""

REQUIRED_IN_WHEEL = (
    "taskflow/_resources/migrations/env.py",
    "taskflow/_resources/migrations/versions/0001_initial.py",
    "taskflow/_resources/alembic.ini",
    "taskflow/_resources/templates/taskflow/base.html",
    "taskflow/_resources/static/htmx.min.js",
)

# Run with the fresh environment's python: argv is venv, database URL, repository root.
TASK_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys
    import time
    from pathlib import Path

    import taskflow
    from taskflow import TaskManager, TaskStatus
    from taskflow._store import migrate

    venv, url, repo = Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3]).resolve()

    package = Path(taskflow.__file__).resolve().parent
    print("taskflow imported from", package)
    assert package.is_relative_to(venv), f"taskflow imported from {package}, not {venv}"
    assert not package.is_relative_to(repo), f"taskflow imported from the checkout {package}"
    for name in ("migrations", "alembic.ini"):
        found = migrate.resource_path(name).resolve()
        assert found == package / "_resources" / name, f"{name} resolved to {found}"

    manager = TaskManager(database_url=url, poll_interval=0.1)


    @manager.task()
    async def add(a, b):
        return a + b


    async def main():
        await manager.startup()
        try:
            task_id = await manager.enqueue(add, 2, 3)
            deadline = time.monotonic() + 20
            while True:
                record = await manager.get_task(task_id)
                assert record is not None, f"task {task_id} not found"
                if record.status.is_final:
                    break
                assert time.monotonic() < deadline, f"task still {record.status} after 20 s"
                await asyncio.sleep(0.05)
            assert record.status == TaskStatus.SUCCESS, (record.status, record.error)
            assert record.result == 5, record.result
        finally:
            await manager.shutdown()
        print("task", task_id, "succeeded with", record.result)


    asyncio.run(main())
    """
)


def clean_env() -> dict[str, str]:
    """The current environment without anything that could point Python at the checkout
    or at another database."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TASKFLOW_DATABASE_URL"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"command: {' '.join(result.args)}\nexit code: {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def expect(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    """Assert the exit code, showing the whole output otherwise; return stdout."""
    assert result.returncode == code, describe(result)
    return result.stdout


def build_wheel(outdir: Path, env: dict[str, str], cwd: Path) -> Path:
    if importlib.util.find_spec("build") is None:
        pytest.fail("the wheel test needs `build` (in the dev extra): pip install build")
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.append("--no-isolation")  # no build environment to download
    cmd.append(str(PROJECT_ROOT))
    expect(run(cmd, cwd=cwd, env=env, timeout=180))
    wheels = list(outdir.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {outdir}, found {wheels}"
    return wheels[0]


def check_requirements(metadata: str) -> None:
    """The wheel's runtime requirements pin nothing tighter than they must: lower bounds
    only (no ``==``, ``~=``, ``<`` or ``!=``), each met by the version the test
    environment pins in scripts/constraints.txt, so an application can take its
    dependencies' security releases without waiting for a taskflow release."""
    pinned = dict(
        line.split("==", 1)
        for line in (PROJECT_ROOT / "scripts" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    pinned = {canonicalize_name(name): Version(version) for name, version in pinned.items()}
    runtime = [
        Requirement(value.strip())
        for name, _, value in (line.partition(":") for line in metadata.splitlines())
        if name == "Requires-Dist" and "extra ==" not in value
    ]
    assert runtime, metadata
    for requirement in runtime:
        for spec in requirement.specifier:
            assert spec.operator == ">=", f"{requirement} pins tighter than a lower bound"
            version = pinned[canonicalize_name(requirement.name)]
            assert version in requirement.specifier, f"pinned {version} does not meet {requirement}"


def check_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        missing = [name for name in REQUIRED_IN_WHEEL if name not in names]
        assert not missing, f"{wheel.name} lacks {missing}; it has:\n" + "\n".join(sorted(names))

        # Every migration file of the checkout is bundled.
        repo_migrations = PROJECT_ROOT / "migrations"
        expected = {
            "taskflow/_resources/migrations/" + path.relative_to(repo_migrations).as_posix()
            for path in repo_migrations.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        assert expected <= names, f"not in the wheel: {sorted(expected - names)}"

        # Nothing outside the package and its metadata (tests, scripts, docs...).
        dist_info = [name.split("/")[0] for name in names if ".dist-info/" in name]
        assert dist_info, f"no .dist-info in {wheel.name}"
        strays = sorted(
            name
            for name in names
            if not name.startswith(("taskflow/", dist_info[0] + "/"))
            or "__pycache__" in name
            or name.endswith(".pyc")
        )
        assert not strays, f"unexpected files in {wheel.name}: {strays}"

        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(f"{dist_info[0]}/entry_points.txt").decode())
        check_requirements(archive.read(f"{dist_info[0]}/METADATA").decode())
    assert entry_points.has_option("console_scripts", "taskflow"), dict(
        entry_points.items("console_scripts") if entry_points.has_section("console_scripts") else {}
    )
    assert entry_points.get("console_scripts", "taskflow").strip() == "taskflow.cli:main"


def make_venv(venv: Path, env: dict[str, str], cwd: Path) -> Path:
    """A fresh venv that sees this interpreter's site-packages (as plain paths); returns
    its python."""
    expect(run([sys.executable, "-m", "venv", str(venv)], cwd=cwd, env=env))
    python = venv / BIN / f"python{EXE}"
    purelib = expect(
        run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            cwd=cwd,
            env=env,
        )
    ).strip()
    borrowed = list(dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]))
    (Path(purelib) / "_taskflow_test_deps.pth").write_text("\n".join(borrowed) + "\n")
    return python


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    env = clean_env()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    wheel = build_wheel(tmp_path / "dist", env, cwd=elsewhere)
    check_wheel_contents(wheel)

    venv = tmp_path / "venv"
    python = make_venv(venv, env, cwd=elsewhere)
    expect(
        run(
            [python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
            cwd=elsewhere,
            env=env,
        )
    )

    cli = venv / BIN / f"taskflow{EXE}"
    assert cli.exists(), f"pip did not install the console script {cli}"
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

    # A database without taskflow's tables is reported out of date (exit 1)...
    not_yet = expect(run([cli, "db", "check", "--url", url], cwd=elsewhere, env=env), code=1)
    assert "out of date" in not_yet, not_yet

    upgraded = expect(run([cli, "db", "upgrade", "--url", url], cwd=elsewhere, env=env))
    assert "database is at revision" in upgraded and "revision none" not in upgraded, upgraded

    checked = run([cli, "db", "check", "--url", url], cwd=elsewhere, env=env)
    assert "up to date" in expect(checked), describe(checked)

    script = elsewhere / "run_task.py"
    script.write_text(TASK_SCRIPT)
    ran = run([python, script, venv, url, PROJECT_ROOT], cwd=elsewhere, env=env, timeout=60)
    assert "succeeded with 5" in expect(ran), describe(ran)
