"""A real PostgreSQL server for the tests and the bench: Debian's ``postgresql`` package
(``scripts/ensure-system-deps postgresql`` installs it), a cluster of its own in a temporary
directory, on a loopback port, stopped and removed afterwards.

Each test gets a schema of its own in one database (:meth:`PostgresServer.fresh_url`):
creating a schema takes a millisecond, a database a few hundred. The store's URL names it
with ``?search_path=``, which asyncpg passes to the server as a setting, as a user's URL would.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .ports import free_port_block

DATABASE = "switchboard"
USER = "switchboard"
#: Debian keeps the server's programs out of PATH, one directory per major version.
BIN_GLOB = "/usr/lib/postgresql/*/bin"


def bin_dir() -> Path | None:
    """The newest installed server's programs, or None when none is installed."""
    found = [Path(d) for d in glob.glob(BIN_GLOB) if (Path(d) / "initdb").exists()]
    return max(found, key=lambda d: int(d.parent.name)) if found else None


class PostgresServer:
    """One throwaway cluster: ``start()``, hand out URLs, ``stop()``."""

    def __init__(self, workdir: Path, port: int | None = None, host: str = "127.0.0.1",
                 durable: bool = False) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed: run scripts/ensure-system-deps "
                               "postgresql")
        self.bin = found
        self.workdir = workdir
        self.data = workdir / "pgdata"
        self.host = host
        self.port = port or free_port_block(1, host)
        #: A test cluster skips fsync (its data is thrown away; the server is still the
        #: real one). The bench's is durable, as a deployment's would be.
        self.durable = durable
        self._schemas = itertools.count(1)
        self._options = ""
        # initdb and the server refuse to run as root: as root, they run as Debian's
        # `postgres` user, which owns the data directory.
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1])} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._as:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.workdir, postgres.pw_uid, postgres.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
                  "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = [f"-c listen_addresses={self.host}", f"-p {self.port}",
                   f"-c unix_socket_directories={self.workdir}", "-c max_connections=200"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off",
                        "-c full_page_writes=off"]
        self._options = " ".join(options)
        self._pg_ctl("start")
        self.psql(f"CREATE DATABASE {DATABASE}", database="postgres")

    def _pg_ctl(self, action: str) -> None:
        # The log file keeps the server's output off our pipes (which would never close).
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.workdir / "server.log"), "-w", "-t", "60", "-m", "fast",
                  "-o", self._options, action)

    def restart(self) -> None:
        """Stop (fast: every connection is terminated) and start again, same data."""
        self._pg_ctl("restart")

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data),
                            "-m", "fast", "-w", "-t", "60", "stop"],
                           capture_output=True, timeout=120)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def psql(self, sql: str, database: str = DATABASE) -> str:
        """Run SQL as the cluster's superuser; its output, unaligned."""
        done = subprocess.run(
            [str(self.bin / "psql"), "-h", self.host, "-p", str(self.port), "-U", USER,
             "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            check=True, capture_output=True, text=True, timeout=60)
        return done.stdout.strip()

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    @staticmethod
    def schema_of(url: str) -> str:
        """The schema a :meth:`fresh_url` names."""
        return url.rpartition("search_path=")[2]

    def fresh_url(self) -> str:
        """The URL of a new, empty schema: one test's store."""
        schema = f"t{os.getpid()}_{next(self._schemas)}"
        self.psql(f"CREATE SCHEMA {schema}")
        return f"{self.url()}?search_path={schema}"
