"""How `wansweep run` prepares Prefect's ephemeral server: the first run holds the machine's
database, a run beside it gets its own, and both give the server time to start on a busy
machine (a fresh database runs every migration) and have it record task runs in batches (one
transaction per task-run event falls behind a sweep). Checked in Prefect's own settings, as the
process reads them after the call."""

import contextvars
import fcntl
import os

import pytest
from prefect.context import SettingsContext, refresh_global_settings_context
from prefect.settings import get_current_settings
from rich.console import Console

from wansweep.cli import run as cli_run

TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DATABASE = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
ANALYTICS = "PREFECT_SERVER_ANALYTICS_ENABLED"
SERVER_LOG = "PREFECT_SERVER_LOGGING_LEVEL"
BATCH = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
READ_BATCH = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE"


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A machine with no Prefect server configured and a Prefect home of its own."""
    saved = {
        name: os.environ.pop(name, None)
        for name in ("PREFECT_API_URL", TIMEOUT, DATABASE, BATCH, READ_BATCH, ANALYTICS, SERVER_LOG)
    }
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    held = len(cli_run._held)
    yield tmp_path
    for lock in cli_run._held[held:]:
        lock.close()
    del cli_run._held[held:]
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
    monkeypatch.undo()
    refresh_global_settings_context()


def prepared() -> tuple[int, str, dict[str, int]]:
    """(start timeout, database URL, task-run recorder batches) as Prefect reads them after
    the call, in a process that has entered no settings context of its own (as `wansweep run`;
    the test suite has one)."""

    def fresh_process():
        SettingsContext.__var__.set(None)
        cli_run._prepare_ephemeral_prefect(Console(quiet=True))
        settings = get_current_settings()
        database = settings.server.database.connection_url
        recorder = settings.server.services.task_run_recorder
        return (
            settings.server.ephemeral.startup_timeout_seconds,
            database.get_secret_value() if database else "",
            {name: getattr(recorder, name) for name in cli_run.RECORDER_BATCHES},
        )

    return contextvars.copy_context().run(fresh_process)


def test_the_first_run_keeps_the_usual_database_and_waits_longer(machine):
    timeout, database, _ = prepared()
    assert timeout == cli_run.EPHEMERAL_STARTUP_TIMEOUT_S
    assert "wansweep-prefect-" not in database


def test_a_run_beside_it_gets_a_database_of_its_own(machine):
    with open(machine / "wansweep-ephemeral.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds the machine's
        timeout, database, _ = prepared()
    assert timeout == cli_run.EPHEMERAL_STARTUP_TIMEOUT_S
    assert database.startswith("sqlite+aiosqlite:///") and "wansweep-prefect-" in database


@pytest.mark.parametrize(
    "theirs, expected", [("600", 600), ("5", cli_run.EPHEMERAL_STARTUP_TIMEOUT_S)]
)
def test_a_longer_wait_of_the_users_is_kept(machine, theirs, expected):
    os.environ[TIMEOUT] = theirs
    assert prepared()[0] == expected


def test_a_configured_server_is_left_alone(machine):
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:4200/api"
    assert prepared()[0] == 20  # Prefect's default
    assert "wansweep-prefect-" not in prepared()[1]


BATCHED = {"batch_size": 500, "read_batch_size": 100}


def test_the_first_run_has_task_runs_recorded_in_batches(machine):
    assert prepared()[2] == BATCHED


def test_a_run_beside_it_has_them_recorded_in_batches_too(machine):
    with open(machine / "wansweep-ephemeral.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert prepared()[2] == BATCHED


def test_larger_batches_of_the_users_are_kept(machine):
    os.environ[BATCH] = "2000"
    assert prepared()[2] == {"batch_size": 2000, "read_batch_size": 100}


def test_a_configured_server_keeps_its_recorder_settings(machine):
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:4200/api"
    assert prepared()[2] == {"batch_size": 1, "read_batch_size": 1}  # Prefect's defaults


def test_the_ephemeral_server_sends_no_telemetry_unless_the_user_says(machine):
    """Its heartbeat writes to the server's SQLite beside the run: 'database is locked'."""
    prepared()
    assert os.environ[ANALYTICS] == "false"  # the server, a child process, reads it there
    assert os.environ[SERVER_LOG] == "CRITICAL"  # its bookkeeping's log is not the run's


def test_a_users_telemetry_setting_is_kept(machine):
    os.environ[ANALYTICS] = "true"
    prepared()
    assert os.environ[ANALYTICS] == "true"
