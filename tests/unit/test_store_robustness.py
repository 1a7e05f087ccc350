"""A store that cannot work says so in one line naming the database and what to do: damaged
SQLite files, PostgreSQL URLs without a driver, missing or async drivers, unusable
directories. Checked through the CLI (`sphere runs|routes|db`) and the library."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.cli import main
from sphere_core.errors import StoreError
from sphere_core.storage import db
from sphere_core.storage.repo import open_repository
from tests.unit.test_store import CONFIG, questions_df, routing_df
from tests.unit.test_store_fixtures import postgres_schema_url

COMMANDS = (["runs"], ["routes", "--question", "q1"], ["db", "current"], ["db", "upgrade"])


def fails_in_one_line(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code != 0, (argv, captured.out, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err + captured.out
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def filled_sqlite(path: Path) -> None:
    with open_repository(f"sqlite:///{path}") as repo:
        repo.create_run("r1", CONFIG, "h")
        qids = [f"q{i}" for i in range(300)]
        repo.upsert_questions(questions_df(qids))
        repo.record_routing_events(routing_df("r1", qids))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_sqlite_file_is_one_line_naming_it(sphere_home, capsys, damage):
    path = sphere_home / "sphere.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a database " * 100)
    else:
        filled_sqlite(path)
        data = path.read_bytes()
        assert len(data) > 3 * 4096
        path.write_bytes(data[: len(data) // 3])
    for argv in COMMANDS:
        err = fails_in_one_line(
            capsys, argv, f"SQLite database {path} is damaged", "move it aside", "sphere db upgrade"
        )
    assert path.read_bytes()[:4]  # left in place for the user to inspect
    with pytest.raises(StoreError, match="is damaged"):
        open_repository()
    assert "Traceback" not in err


@pytest.mark.postgres
def test_postgresql_urls_without_driver_use_psycopg3(sphere_home, capsys):
    url, cleanup = postgres_schema_url()
    try:
        plain = "postgresql://" + url.split("://", 1)[1]
        code = main(["db", "upgrade", "--database-url", plain])
        out = capsys.readouterr().out
        assert code == 0 and "postgresql+psycopg://" in out and "at revision" in out
        legacy = "postgres://" + url.split("://", 1)[1]
        assert main(["runs", "--database-url", legacy]) == 0
        with open_repository(plain) as repo:
            assert repo.engine.url.drivername == "postgresql+psycopg"
    finally:
        cleanup()


def test_postgres_scheme_is_mapped_and_password_hidden(sphere_home, capsys):
    assert (
        db.resolve_database_url("postgres://me:pw@127.0.0.1:1/x")
        == "postgresql+psycopg://me:pw@127.0.0.1:1/x"
    )
    assert db.resolve_database_url("postgresql://h/x") == "postgresql+psycopg://h/x"
    assert db.resolve_database_url("postgresql+psycopg://h/x") == "postgresql+psycopg://h/x"
    assert db.resolve_database_url("sqlite:///postgres://x") == "sqlite:///postgres://x"
    for scheme in ("postgres", "postgresql"):
        err = fails_in_one_line(
            capsys,
            ["runs", "--database-url", f"{scheme}://me:hunter2@127.0.0.1:1/x"],
            "cannot connect to database postgresql+psycopg://me:***@127.0.0.1:1/x",
        )
        assert "hunter2" not in err


@pytest.mark.parametrize(
    "url, needle",
    [
        (
            "postgresql+psycopg2://me:hunter2@db.example/x",
            "the database driver for postgresql+psycopg2://me:***@db.example/x is not installed",
        ),
        (
            "postgresql+asyncpg://me:hunter2@db.example/x",
            "'asyncpg' in postgresql+asyncpg://me:***@db.example/x is asynchronous",
        ),
        (
            "postgresql+nosuchdriver://me:hunter2@db.example/x",
            "unknown database driver 'nosuchdriver'",
        ),
        ("mysql://me:hunter2@db.example/x", "unsupported database mysql://me:***@db.example/x"),
    ],
)
def test_missing_or_unusable_drivers(sphere_home, capsys, url, needle):
    for argv in COMMANDS:
        err = fails_in_one_line(capsys, [*argv, "--database-url", url], needle)
        assert "hunter2" not in err
    with pytest.raises(StoreError) as info:  # the library raises the same
        open_repository(url)
    assert needle in str(info.value) and "hunter2" not in str(info.value)


def _writable(path: Path) -> bool:
    try:
        probe = path / ".probe"
        probe.write_text("x")
        probe.unlink()
        return True
    except OSError:
        return False


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A directory nothing can be written into: chmod 555, or (as root) a read-only sysfs dir."""
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    if not _writable(directory):
        yield directory
        directory.chmod(0o755)
        return
    directory.chmod(0o755)
    sysfs = Path("/sys/kernel")
    if sysfs.is_dir() and not _writable(sysfs):
        yield sysfs
        return
    pytest.skip("no read-only directory available (running as root without a read-only sysfs)")


def test_unusable_sqlite_locations(sphere_home, capsys, tmp_path, read_only_dir):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {
        f"sqlite:///{a_file}/sphere.db": (
            f"cannot create SQLite database {a_file}/sphere.db",
            f"{a_file} is not a directory",
        ),
        f"sqlite:///{a_file}/sub/sphere.db": (
            f"{a_file}/sub/sphere.db",
            f"{a_file} is not a directory",
        ),
        f"sqlite:///{read_only_dir}/sphere.db": (
            f"SQLite database {read_only_dir}/sphere.db",
            "writable",
        ),
        f"sqlite:///{read_only_dir}/sub/sphere.db": (f"{read_only_dir}/sub/sphere.db", "writable"),
        f"sqlite:///{tmp_path}": (f"SQLite database {tmp_path} is not a file",),
    }
    for url, needles in cases.items():
        for argv in COMMANDS:
            fails_in_one_line(capsys, [*argv, "--database-url", url], *needles)


def test_sphere_home_that_is_not_a_directory(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home-file"
    home.write_text("x")
    monkeypatch.setenv("SPHERE_HOME", str(home))
    monkeypatch.delenv("SPHERE_DATABASE_URL", raising=False)
    with pytest.raises(
        StoreError,
        match=f"cannot create SQLite database {home}/sphere.db: {home} is not a directory",
    ):
        open_repository()
    with pytest.raises(StoreError, match="is not a directory"):
        db.upgrade_database()
    code = main(["runs"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and str(home) in err


def test_database_stamped_by_a_newer_version(tmp_path):
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    db.upgrade_database(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"created by a newer SPHERE"):
        open_repository(url)
