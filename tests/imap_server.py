"""A real IMAP server for tests: dovecot 2.3 on 127.0.0.1, in a throw-away sandbox, with its own CA.

`Dovecot(log_copy=...)` writes a config, a passwd-file and a CA-signed certificate for 127.0.0.1 and
localhost (trustme), starts `dovecot -F -c CONFIG` in its own process group, and waits until both
ports accept: `imap_port` (STARTTLS) and `imaps_port` (implicit TLS). `ssl = required`, so no
password is accepted before TLS. `stop()` kills the whole process group and removes the sandbox,
copying dovecot's log to `log_copy` first.

The logins are fixed at start (`users`: name -> password; dovecot re-reads a changed passwd-file at
most once a second, too late for a test that logs in right away), so give each test its own user to
get an empty mailbox. Every user's mail is a Maildir under the sandbox.

Running as root, dovecot refuses uid 0 for mail and drops its own services to the `dovecot` and
`dovenull` users, so the sandbox is a world-traversable directory in the system temp folder (pytest's
own temp folders are 0700) and the mail is owned by `nobody`. Running as another user, everything
runs as that user.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def dovecot_binary() -> str | None:
    """The dovecot master binary, or None when the Debian package dovecot-imapd is not installed."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class DovecotError(RuntimeError):
    pass


class Dovecot:
    """Use as `with Dovecot() as server:`; see the module docstring."""

    def __init__(self, users: dict[str, str], *, log_copy: Path | None = None) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise DovecotError("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
        self.binary = binary
        self.log_copy = log_copy
        self.host = HOST
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="digestmail-dovecot-"))
        self.ca_file = self.root / "ca.pem"
        self.log_path = self.root / "dovecot.log"
        self.passwd = self.root / "passwd"
        self.config = self.root / "dovecot.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        for name, password in users.items():
            if ":" in name + password or "\n" in name + password:
                raise ValueError(f"the passwd-file cannot hold {name!r} / {password!r}")
        self.users = dict(users)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Dovecot:
        try:
            self._write_files()
            with open(self.root / "stdout.log", "wb") as out:
                self.proc = subprocess.Popen([self.binary, "-F", "-c", str(self.config)],
                                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            # SIGTERM to the master and every service it forked; what has not gone a moment after
            # the master is killed. Bounded: at most ~4 s, then nothing of the group is left.
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
            _wait_group(proc.pid, 1.0)
            if proc.poll() is None or _group_alive(proc.pid):
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
                _wait_group(proc.pid, 2.0)
        if self.log_copy is not None and self.log_path.exists():
            try:
                shutil.copyfile(self.log_path, self.log_copy)
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        """dovecot's log so far (for assertion messages)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log written)"

    # -- users and mail ---------------------------------------------------------------------------

    def connect(self, user: str) -> imaplib.IMAP4_SSL:
        """A logged-in client for test set-up and checks (implicit TLS, verified against our CA)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        client = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=context, timeout=10)
        blob = b"\0" + user.encode() + b"\0" + self.users[user].encode()
        client.authenticate("PLAIN", lambda _: blob)
        return client

    def append(self, user: str, folder: str, data: bytes, flags: str | None = None) -> int:
        """APPEND one message (creating the folder if needed); return its UID."""
        client = self.connect(user)
        try:
            client.create(f'"{folder}"')  # NO [ALREADYEXISTS] is fine
            typ, resp = client.append(f'"{folder}"', flags, None, data)
            assert typ == "OK", resp
            # "[APPENDUID <uidvalidity> <uid>] Append completed."
            return int(resp[0].split()[2].rstrip(b"]"))
        finally:
            client.logout()

    def uids(self, user: str, folder: str) -> list[int]:
        """The UIDs in a folder ([] when the folder does not exist)."""
        client = self.connect(user)
        try:
            typ, _ = client.select(f'"{folder}"', readonly=True)
            if typ != "OK":
                return []
            typ, data = client.uid("SEARCH", "ALL")
            return [int(u) for u in data[0].split()]
        finally:
            client.logout()

    def flags(self, user: str, folder: str) -> dict[int, str]:
        """UID -> the FLAGS list as the server prints it."""
        client = self.connect(user)
        try:
            client.select(f'"{folder}"', readonly=True)
            typ, data = client.uid("FETCH", "1:*", "(UID FLAGS)")
            out: dict[int, str] = {}
            for line in data:
                if isinstance(line, bytes):
                    text = line.decode()
                    uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                    out[uid] = text.split("FLAGS (")[1].split(")")[0]
            return out
        finally:
            client.logout()

    # -- internals --------------------------------------------------------------------------------

    def _write_files(self) -> None:
        root = self.root
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(root / "server.key"))
        (root / "server.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        self.passwd.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items()),
                               encoding="utf-8")
        self.passwd.chmod(0o644)  # read by the auth service, which runs as the dovecot user
        mail = root / "mail"
        mail.mkdir()
        if os.getuid() == 0:
            # Services drop to dovecot/dovenull, mail runs as nobody: they must reach their files.
            root.chmod(0o755)
            nobody = pwd.getpwnam("nobody")
            uid, gid = nobody.pw_uid, nobody.pw_gid
            os.chown(mail, uid, gid)
            for user in ("dovecot", "dovenull"):
                try:
                    pwd.getpwnam(user)
                except KeyError:
                    raise DovecotError(f"the system user {user!r} is missing (the dovecot-core package "
                                       "creates it)") from None
            users = ""
            anvil_chroot = login_chroot = ""
        else:
            uid, gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(uid).pw_name
            group = grp.getgrgid(gid).gr_name
            # Not root: no setuid and no chroot are possible; every service runs as us.
            users = f"""
default_internal_user = {me}
default_internal_group = {group}
default_login_user = {me}
"""
            anvil_chroot = login_chroot = "chroot ="
        self.config.write_text(f"""# generated by tests/imap_server.py
base_dir = {root}/run
state_dir = {root}/state
instance_name = digestmail-test-{self.imaps_port}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
protocols = imap
listen = {HOST}
ssl = required
ssl_cert = <{root}/server.pem
ssl_key = <{root}/server.key
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:~/Maildir
# A test logs in with a wrong password on purpose: no 2 s reply delay, no growing penalty for the IP.
auth_failure_delay = 0
service anvil {{
  {anvil_chroot}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{users}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u
}}
service imap-login {{
  {login_chroot}
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
""", encoding="utf-8")

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        waiting = {self.imap_port, self.imaps_port}
        while waiting:
            if self.proc.poll() is not None:
                out = (self.root / "stdout.log").read_text(errors="replace")
                raise DovecotError(f"dovecot exited with {self.proc.returncode}:\n{out}\n{self.log()}")
            for port in sorted(waiting):
                try:
                    socket.create_connection((self.host, port), timeout=0.5).close()
                    waiting.discard(port)
                except OSError:
                    pass
            if waiting and time.monotonic() > deadline:
                raise DovecotError(f"dovecot did not listen on {sorted(waiting)} within {START_TIMEOUT}s:\n"
                                   f"{self.log()}")
            if waiting:
                time.sleep(0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group(pgid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting for init to reap them do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ")".
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False
