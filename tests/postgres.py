"""A throwaway PostgreSQL cluster on a loopback port, for the tests (never a shared server)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import free_port


class PostgresUnavailableError(RuntimeError):
    """No cluster can be started here; the message says why."""


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PostgresUnavailableError(
            "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
            "(CI installs them: apt-get install postgresql)"
        )
    return Path(found[-1]).parent


def _as_postgres(command: str) -> None:
    # initdb refuses to run as root: run the cluster as the 'postgres' system user
    prefix = ["su", "postgres", "-s", "/bin/bash", "-c"] if os.geteuid() == 0 else ["bash", "-c"]
    result = subprocess.run([*prefix, command], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        reason = result.stderr.strip()[-400:]
        raise PostgresUnavailableError(f"{command.split()[0]} failed: {reason}")


@contextmanager
def throwaway_cluster(databases: tuple[str, ...] = ("catalog", "tables")) -> Iterator[str]:
    """Start a cluster, create ``databases``, yield ``tiled@127.0.0.1:PORT``; stop and remove it.

    Raises
    ------
    PostgresUnavailableError
        With the reason, when binaries or the ``postgres`` user are missing.
    """
    bin_dir = _binaries()
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailableError("no 'postgres' system user to run the cluster") from None
    # /dev/shm: reachable by the postgres user, unlike 0700 pytest/mktemp directories
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    directory = Path(tempfile.mkdtemp(prefix="bas-pg-", dir=base))
    if os.geteuid() == 0:
        shutil.chown(directory, user="postgres", group="postgres")
    data, port = directory / "data", free_port()
    try:
        _as_postgres(f"{bin_dir}/initdb -D {data} -U tiled --auth=trust -E UTF8 >/dev/null")
        _as_postgres(
            f"{bin_dir}/pg_ctl -D {data} -l {directory}/log -w -t 60 "
            f"-o '-h 127.0.0.1 -p {port} -k {directory} -F' start >/dev/null"
        )
        try:
            for database in databases:
                _as_postgres(f"{bin_dir}/createdb -h 127.0.0.1 -p {port} -U tiled {database}")
            yield f"tiled@127.0.0.1:{port}"
        finally:
            _as_postgres(f"{bin_dir}/pg_ctl -D {data} -m immediate -w stop >/dev/null")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _admin(server: str, statement: str) -> None:
    import asyncio

    import asyncpg

    async def execute() -> None:
        connection = await asyncpg.connect(f"postgresql://{server}/catalog")
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute())


@contextmanager
def new_database(server: str, prefix: str = "new") -> Iterator[str]:
    """A new, empty database in the cluster ``server`` (``tiled@127.0.0.1:PORT``): its name,
    dropped after (its connections closed)."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex}"
    _admin(server, f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        _admin(server, f"DROP DATABASE {name} WITH (FORCE)")
