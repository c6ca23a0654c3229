"""Real mail, DNS and https servers for the tests, on 127.0.0.1 only.

Fixtures (imported by tests/conftest.py; configuration files in tests/servers/):

``postfix``
    Debian's Postfix as a private instance (``postfix -c DIR``, its own queue, nothing
    from /etc/postfix): SMTP on ``smtp_port`` (STARTTLS offered, AUTH after it),
    submission on ``submission_port`` (STARTTLS and AUTH required) and implicit TLS on
    ``smtps_port``; ``rules_port`` is submission again, answering as a test sets it
    (``refusing(maps, **params)``). AUTH PLAIN/LOGIN goes through Dovecot's SASL with
    ``smtp_user`` / ``smtp_password``. Mail for ``USER@digest.test`` (ada, bob, bounces, digest; a
    ``+tag`` is ignored) lands in the Maildir ``maildir(USER)``; any other user of the
    domain is accepted, then bounced, so an RFC 3464 report reaches the envelope sender.
    Mail for other domains bounces at once: nothing leaves the machine. Helpers:
    ``wait_for(user, n)``, ``messages(user)``, ``greylist(rcpt, seconds)`` (450 4.7.1
    until ``seconds`` after the first refused try), ``flush()`` (``postqueue -f`` and
    wait until the queue is empty), ``log()``.
``dovecot``
    Dovecot serving the same Maildirs: IMAP (``imap_port`` with STARTTLS, ``imaps_port``)
    and POP3 (``pop3_port``, ``pop3s_port``); ``user``/``password`` is the bounce
    mailbox, ``users`` every account.
``dns_server``
    Knot DNS, authoritative for ``digest.test`` on (``host``, ``port``), UDP and TCP.
    ``set_records([(name, type, value), ...])`` replaces the test's records (TXT values
    are quoted and split for you) and returns once the new zone is served.
``smtp_sink_c``
    Postfix's C ``smtp-sink`` (accepts and discards; ``received()`` counts), started by
    bench/c_sink.py, which the benchmarks use too.
``https_server``
    An https server with a certificate from the session's CA; ``add(path)`` answers 200.

Every server's certificate is signed by a CA made for the session: verify with
``ca_file`` (``ssl_context()`` builds a verifying client context). The mail and DNS
servers start once per session (``mail_servers`` / ``dns_server_session``); the
function fixtures empty the Maildirs, the queue, the greylist and the test records first.
Servers run under their own unprivileged users (postfix, dovecot/dovenull, knot, nobody)
in one temporary folder, removed at the end (kept with NL_TEST_KEEP_SERVERS=1). A server
that fails to start raises with the tail of its log. A missing binary skips the test,
except under CI=true, where it fails.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import grp
import ipaddress
import os
import pty
import pwd
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from bench import c_sink

if TYPE_CHECKING:
    import dns.resolver

SERVERS = Path(__file__).parent / "servers"
DOMAIN = "digest.test"
MAIL_USERS = ("ada", "bob", "bounces", "digest")
HOST = "127.0.0.1"


def need_service(name: str, reason: str) -> None:
    """Skip with ``reason``, or fail under CI where every service must be present (as
    tests/conftest.py does for PostgreSQL)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


def need_binaries(name: str, *paths: str) -> None:
    missing = [p for p in paths if not os.access(p, os.X_OK)]
    if missing:
        need_service(name, f"{', '.join(missing)} not installed (see .ci/run)")
    if os.geteuid() != 0:
        need_service(name, "a private instance needs root to start (it drops privileges)")


class ServerError(RuntimeError):
    """A server failed to start or to answer; the message ends with its log."""


def log_tail(*paths: Path, lines: int = 40) -> str:
    out = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        else:
            out.append(f"--- {path}: not written")
    return "\n".join(out)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def render(template: Path, values: dict[str, object]) -> str:
    """``template`` with every ``{{name}}`` replaced; an unknown name is an error."""
    text = template.read_text()
    unknown = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)) - set(values))
    if unknown:
        raise KeyError(f"{template}: no value for {', '.join(unknown)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(values[m.group(1)]), text)


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               alive: Callable[[], bool] = lambda: True,
               logs: Iterable[Path] = ()) -> None:
    """Poll ``check`` until true; raise ServerError (with the logs) on timeout or death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            raise ServerError(f"{what}: the server exited or failed\n{log_tail(*logs)}")
        time.sleep(0.05)
    raise ServerError(f"{what}: not within {timeout:.0f} s\n{log_tail(*logs)}")


def greets(port: int, prefix: bytes = b"") -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            return s.recv(64).startswith(prefix) if prefix else True
    except OSError:
        return False


def run_with_tty_stderr(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv``; returns (exit code, stdout + stderr). Postfix's commands print their
    errors only to a terminal (else to the mail log, which may not exist yet), so stderr
    is a pseudo-terminal here."""
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=follower, timeout=timeout)
    finally:
        os.close(follower)
        reader.join(5)
        os.close(leader)
    err = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return proc.returncode, proc.stdout.decode("utf-8", "replace") + err


def chown(path: Path, user: str, group: str | None = None) -> None:
    shutil.chown(path, user, group or grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name)


# ---- the session's TLS: one CA, one server certificate for every server -------------


@dataclass
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the servers (hostname 127.0.0.1, localhost or
        mx.digest.test) against the session's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls(folder: Path) -> Tls:
    """A CA made for this session and a server certificate it signs, for
    ``mx.digest.test``, ``digest.test``, ``localhost`` and ``127.0.0.1`` (EC P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=7)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "newsletter test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    usage = {k: False for k in ("content_commitment", "data_encipherment", "key_agreement",
                                "encipher_only", "decipher_only")}
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_encipherment=False,
                                       key_cert_sign=True, crl_sign=True, **usage), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    names = [f"mx.{DOMAIN}", DOMAIN, "localhost"]
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(HOST))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         key_cert_sign=False, crl_sign=False, **usage),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    tls = Tls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    tls.key_file.chmod(0o600)
    return tls


# ---- the Maildirs Postfix delivers to and Dovecot serves ----------------------------


@dataclass
class Mailboxes:
    """One Maildir per user of the test domain, owned by one unprivileged user."""

    root: Path
    domain: str = DOMAIN
    owner: str = "nobody"
    passwords: dict[str, str] = field(default_factory=dict)  # address -> password

    def __post_init__(self) -> None:
        self.passwords = {f"{u}@{self.domain}": f"{u}-secret" for u in MAIL_USERS}

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.owner).pw_uid

    @property
    def gid(self) -> int:
        return pwd.getpwnam(self.owner).pw_gid

    def maildir(self, user: str) -> Path:
        """The Maildir of ``user`` (``ada`` or ``ada@digest.test``)."""
        name = user.split("@")[0].split("+")[0]
        if f"{name}@{self.domain}" not in self.passwords:
            raise KeyError(f"{user}: not a mailbox of {self.domain} ({', '.join(MAIL_USERS)})")
        return self.root / name

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chown(self.root, self.uid, self.gid)
        for address in self.passwords:
            box = self.maildir(address)
            for sub in ("", "cur", "new", "tmp"):
                (box / sub).mkdir(exist_ok=True)
                os.chown(box / sub, self.uid, self.gid)

    def clear(self) -> None:
        """Empty every mailbox (and Dovecot's index files with it)."""
        for address in self.passwords:
            shutil.rmtree(self.maildir(address), ignore_errors=True)
        self.create()

    def files(self, user: str) -> list[Path]:
        box = self.maildir(user)
        found = [p for sub in ("new", "cur") for p in (box / sub).iterdir() if p.is_file()]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))

    def raw_messages(self, user: str) -> list[bytes]:
        return [p.read_bytes() for p in self.files(user)]

    def messages(self, user: str) -> list[EmailMessage]:
        """The messages in ``user``'s Maildir, oldest first, parsed."""
        parser = BytesParser(policy=email.policy.default)
        return [cast(EmailMessage, parser.parsebytes(raw)) for raw in self.raw_messages(user)]

    def wait_for(self, user: str, n: int = 1, timeout: float = 20,
                 log: Path | None = None) -> list[EmailMessage]:
        """Block until ``user`` holds at least ``n`` messages; returns them all."""
        wait_until(lambda: len(self.files(user)) >= n, timeout,
                   f"{n} message(s) in {self.maildir(user)}", logs=[log] if log else [])
        return self.messages(user)


# ---- Dovecot ------------------------------------------------------------------------


@dataclass
class Dovecot:
    """A running private Dovecot (see the module docstring)."""

    mailboxes: Mailboxes
    tls: Tls
    conf: Path
    log_file: Path
    sasl_socket: Path
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    proc: subprocess.Popen[bytes] | None = None
    host: str = HOST

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def user(self) -> str:
        return f"bounces@{self.mailboxes.domain}"

    @property
    def password(self) -> str:
        return self.mailboxes.passwords[self.user]

    @property
    def users(self) -> dict[str, str]:
        return dict(self.mailboxes.passwords)

    def ssl_context(self) -> ssl.SSLContext:
        return self.tls.ssl_context()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_dovecot(base: Path, tls: Tls, mailboxes: Mailboxes) -> Dovecot:
    folder = base / "dovecot"
    (folder / "state").mkdir(parents=True)
    users = folder / "users"
    users.write_text("".join(f"{a}:{{PLAIN}}{p}\n" for a, p in mailboxes.passwords.items()))
    users.chmod(0o640)
    chown(users, "root", "dovecot")
    ports = free_ports(4)
    dovecot = Dovecot(mailboxes, tls, folder / "dovecot.conf", folder / "dovecot.log",
                      folder / "run" / "auth-postfix", imap_port=ports[0],
                      imaps_port=ports[1], pop3_port=ports[2], pop3s_port=ports[3])
    dovecot.conf.write_text(render(SERVERS / "dovecot" / "dovecot.conf", {
        "instance": f"nl-test-{os.getpid()}", "run_dir": folder / "run",
        "state_dir": folder / "state", "log_file": dovecot.log_file,
        "cert_file": tls.cert_file, "key_file": tls.key_file, "domain": mailboxes.domain,
        "mail_dir": mailboxes.root, "users_file": users, "mail_uid": mailboxes.uid,
        "mail_gid": mailboxes.gid, "imap_port": ports[0], "imaps_port": ports[1],
        "pop3_port": ports[2], "pop3s_port": ports[3]}))
    stderr = folder / "stderr.log"
    with open(stderr, "wb") as err:
        dovecot.proc = subprocess.Popen(
            ["/usr/sbin/dovecot", "-F", "-c", str(dovecot.conf)], stdin=subprocess.DEVNULL,
            stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
    proc = dovecot.proc
    register_pid(base, proc.pid, "dovecot")
    try:
        wait_until(lambda: greets(ports[0], b"* OK") and greets(ports[2], b"+OK")
                   and dovecot.sasl_socket.exists(), 20, "Dovecot start",
                   alive=lambda: proc.poll() is None, logs=[stderr, dovecot.log_file])
    except BaseException:
        dovecot.stop()
        raise
    return dovecot


# ---- the greylisting policy service Postfix asks at RCPT time -----------------------


class Greylist:
    """Postfix policy service (SMTPD_POLICY_README): ``450 4.7.1`` for a listed recipient
    until ``seconds`` after the first refused attempt, then accepted, as greylisting does
    (minutes in the wild, seconds here). ``decisions`` records (recipient, action)."""

    def __init__(self) -> None:
        self.windows: dict[str, float] = {}
        self.first_refused: dict[str, float] = {}
        self.decisions: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        greylist = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                attrs: dict[str, str] = {}
                for raw in self.rfile:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line:
                        name, _, value = line.partition("=")
                        attrs[name] = value
                        continue
                    action = greylist.decide(attrs.get("recipient", ""))
                    self.wfile.write(f"action={action}\n\n".encode())
                    self.wfile.flush()
                    attrs = {}

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((HOST, 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, rcpt: str, seconds: float) -> None:
        with self.lock:
            self.windows[rcpt.lower()] = seconds
            self.first_refused.pop(rcpt.lower(), None)

    def clear(self) -> None:
        with self.lock:
            self.windows.clear()
            self.first_refused.clear()
            self.decisions.clear()

    def decide(self, rcpt: str) -> str:
        key, now = rcpt.lower(), time.monotonic()
        with self.lock:
            action = "DUNNO"
            if key in self.windows:
                first = self.first_refused.setdefault(key, now)
                left = self.windows[key] - (now - first)
                if left > 0:
                    action = f"450 4.7.1 greylisted, try again in {left:.0f} seconds"
            self.decisions.append((rcpt, action))
        return action

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- Postfix ------------------------------------------------------------------------


@dataclass
class Postfix:
    """A running private Postfix (see the module docstring)."""

    mailboxes: Mailboxes
    tls: Tls
    greylister: Greylist
    config_dir: Path
    queue_dir: Path
    log_file: Path
    smtp_port: int
    submission_port: int
    smtps_port: int
    rules_port: int = 0
    host: str = HOST
    rules: int = 0  # the rules listener's overrides set so far (``refusing``)

    @property
    def domain(self) -> str:
        return self.mailboxes.domain

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def smtp_user(self) -> str:
        return f"digest@{self.domain}"

    @property
    def smtp_password(self) -> str:
        return self.mailboxes.passwords[self.smtp_user]

    def ssl_context(self) -> ssl.SSLContext:
        return self.tls.ssl_context()

    def maildir(self, user: str) -> Path:
        return self.mailboxes.maildir(user)

    def messages(self, user: str) -> list[EmailMessage]:
        return self.mailboxes.messages(user)

    def wait_for(self, user: str, n: int = 1, timeout: float = 20) -> list[EmailMessage]:
        return self.mailboxes.wait_for(user, n, timeout, log=self.log_file)

    def greylist(self, rcpt: str, seconds: float) -> None:
        """Answer ``450 4.7.1`` to RCPT TO:<rcpt> until ``seconds`` after the first refusal."""
        self.greylister.add(rcpt, seconds)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def run(self, command: str, *args: str, check: bool = True) -> str:
        """Run a Postfix command (postfix, postqueue, postsuper) on this instance."""
        code, out = run_with_tty_stderr([f"/usr/sbin/{command}", "-c", str(self.config_dir),
                                         *args])
        if check and code != 0:
            raise ServerError(f"{command} {' '.join(args)}: exit {code}\n{out}\n"
                              f"{log_tail(self.log_file)}")
        return out

    def refusing(self, maps: dict[str, str] | None = None, **params: str) -> None:
        """Make the rules listener (``rules_port``: STARTTLS and AUTH required, as on
        ``submission_port``) answer as ``params`` say: main.cf parameters for it alone,
        e.g. ``smtpd_recipient_restrictions="check_recipient_access,regexp:{maps}/rcpt"``
        (``{maps}`` is ``config_dir``, where each of ``maps`` (name -> text) is written
        first). Takes effect by a reload, waited for (the greeting names the new rules);
        ``reset`` puts the listener back as it started."""
        self.rules += 1
        for name, text in (maps or {}).items():
            (self.config_dir / name).write_text(text)
        service = f"{self.host}:{self.rules_port}/inet"
        self.run("postconf", "-PX", *(f"{service}/{name}" for name in self._rule_names()),
                 check=False)
        banner = f"$myhostname ESMTP rules-{self.rules}"
        for name, value in {**params, "smtpd_banner": banner}.items():
            # (master.cf's -o takes no spaces: the value is a main.cf parameter of its own)
            value = value.replace("{maps}", str(self.config_dir))
            self.run("postconf", "-e", f"rules_{name} = {value}")
            self.run("postconf", "-P", f"{service}/{name}=$rules_{name}")
        self.run("postfix", "reload")
        greeting = f"220 mx.{self.domain} ESMTP rules-{self.rules}".encode()
        wait_until(lambda: greets(self.rules_port, greeting) and greets(self.rules_port, greeting),
                   20, "the rules listener's new configuration", logs=[self.log_file])

    def _rule_names(self) -> list[str]:
        """The names ``refusing`` set on the rules listener (all but its own three)."""
        out = self.run("postconf", "-P", check=False)
        prefix = f"{self.host}:{self.rules_port}/inet/"
        names = [line.split("=", 1)[0].strip()[len(prefix):] for line in out.splitlines()
                 if line.startswith(prefix)]
        return [n for n in names if n not in ("syslog_name", "smtpd_tls_security_level",
                                              "smtpd_client_restrictions")]

    def queued(self) -> int:
        """Messages in the queue (not yet delivered or bounced), counted on disk."""
        return sum(1 for sub in ("maildrop", "incoming", "active", "deferred", "hold")
                   for _, _, files in os.walk(self.queue_dir / sub) for _ in files)

    def flush(self, timeout: float = 30) -> None:
        """``postqueue -f`` (try every deferred message now), then wait for an empty queue."""
        self.run("postqueue", "-f")
        wait_until(lambda: self.queued() == 0, timeout, "Postfix queue to empty",
                   logs=[self.log_file])

    def reset(self) -> None:
        """Between tests: let what is in flight finish, drop the rest, empty the mailboxes
        and the greylist."""
        deadline = time.monotonic() + 5
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.queued():
            self.run("postsuper", "-d", "ALL", check=False)
        self.greylister.clear()
        self.mailboxes.clear()
        if self.rules:  # the rules listener as it started
            self.rules = 0
            names = self._rule_names()
            if names:
                self.run("postconf", "-PX", *(f"{self.host}:{self.rules_port}/inet/{n}"
                                               for n in names))
            self.run("postfix", "reload")

    def stop(self) -> None:
        pid_file = self.queue_dir / "pid" / "master.pid"
        self.run("postfix", "stop", check=False)
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        for _ in range(200):  # the master exits once its children have
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        self.run("postfix", "abort", check=False)


def start_postfix(base: Path, tls: Tls, mailboxes: Mailboxes, dovecot: Dovecot,
                  greylist: Greylist) -> Postfix:
    folder = base / "postfix"
    config, data = folder / "config", folder / "data"
    for path in (config, data, folder / "queue"):
        path.mkdir(parents=True)
    chown(data, "postfix")
    ports = free_ports(4)
    postfix = Postfix(mailboxes, tls, greylist, config, folder / "queue", folder / "maillog",
                      smtp_port=ports[0], submission_port=ports[1], smtps_port=ports[2],
                      rules_port=ports[3])
    values: dict[str, object] = {
        "queue_dir": postfix.queue_dir, "data_dir": data, "log_file": postfix.log_file,
        "domain": mailboxes.domain, "mail_dir": mailboxes.root, "config_dir": config,
        "mail_uid": mailboxes.uid, "mail_gid": mailboxes.gid, "cert_file": tls.cert_file,
        "key_file": tls.key_file, "sasl_socket": dovecot.sasl_socket,
        "policy_port": greylist.port, "smtp_port": ports[0], "submission_port": ports[1],
        "smtps_port": ports[2], "rules_port": ports[3]}
    for name in ("main.cf", "master.cf"):
        (config / name).write_text(render(SERVERS / "postfix" / name, values))
    (config / "vmailbox").write_text("".join(
        f"{address} {mailboxes.maildir(address).name}/\n" for address in mailboxes.passwords))
    try:
        postfix.run("postfix", "start")
        wait_until(lambda: greets(ports[0], b"220"), 20, "Postfix SMTP greeting",
                   alive=lambda: "fatal:" not in postfix.log(), logs=[postfix.log_file])
    except BaseException:
        postfix.stop()
        raise
    return postfix


# ---- Knot DNS -----------------------------------------------------------------------


Record = tuple[str, str, str]  # (name relative to the zone or absolute with ".", type, value)


def zone_line(zone: str, name: str, rtype: str, value: str) -> str:
    """One zone-file line; a TXT value is quoted and cut into 255-byte strings."""
    owner = name if name == "@" or name.endswith(".") else name.removesuffix("." + zone)
    if owner == zone:
        owner = "@"
    rtype = rtype.upper()
    if rtype == "TXT":
        data = value.encode()
        chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
        value = " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'
                         for c in chunks)
    return f"{owner} IN {rtype} {value}"


@dataclass
class DnsServer:
    """A running Knot DNS, authoritative for ``zone`` (see the module docstring)."""

    zone: str
    port: int
    folder: Path
    conf: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = HOST
    records: list[Record] = field(default_factory=list)
    serial: int = 1

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def resolver(self) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only."""
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = 5
        return resolver

    def write_zone(self) -> None:
        zone_file = self.folder / f"{self.zone}.zone"
        lines = "\n".join(zone_line(self.zone, *r) for r in self.records)
        zone_file.write_text(render(SERVERS / "knot" / "zone.template", {
            "zone": self.zone, "serial": self.serial, "records": lines}))
        zone_file.chmod(0o644)

    def serving_serial(self) -> int | None:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rdatatype

        try:
            answer = dns.query.udp(dns.message.make_query(self.zone, dns.rdatatype.SOA),
                                   self.host, port=self.port, timeout=1)
        except (OSError, dns.exception.DNSException):
            return None
        for rrset in answer.answer:
            for rdata in rrset:
                return int(rdata.serial)
        return None

    def set_records(self, records: Iterable[Record]) -> None:
        """Replace the test's records, e.g. ``[("@", "TXT", "v=spf1 -all"),
        ("s1._domainkey", "TXT", "v=DKIM1; k=rsa; p=…"), ("_dmarc", "TXT", "v=DMARC1;
        p=none")]``; returns once the server answers with the new zone."""
        self.records = list(records)
        self.serial += 1
        self.write_zone()
        proc = subprocess.run(["/usr/sbin/knotc", "-c", str(self.conf), "-b", "zone-reload",
                               self.zone], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise ServerError(f"knotc zone-reload: {proc.stdout}{proc.stderr}\n"
                              f"{log_tail(self.log_file)}")
        wait_until(lambda: self.serving_serial() == self.serial, 10,
                   f"Knot serving serial {self.serial}", logs=[self.log_file])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_knot(base: Path, zone: str = DOMAIN) -> DnsServer:
    folder = base / "knot"
    (folder / "db").mkdir(parents=True)
    user = "knot" if _has_user("knot") else "nobody"
    for path in (folder, folder / "db"):
        chown(path, user)
    port = free_ports(1)[0]
    server = DnsServer(zone, port, folder, base / "knot.conf", folder / "knot.log")
    server.conf.write_text(render(SERVERS / "knot" / "knot.conf", {
        "run_dir": folder, "log_file": server.log_file, "port": port, "zone": zone}))
    server.write_zone()
    stderr = base / "knot.stderr"
    with open(stderr, "wb") as err:
        server.proc = subprocess.Popen(
            ["/usr/sbin/knotd", "-c", str(server.conf)], stdin=subprocess.DEVNULL, stdout=err,
            stderr=subprocess.STDOUT, user=user, group=pwd.getpwnam(user).pw_gid,
            start_new_session=True)
    proc = server.proc
    register_pid(base, proc.pid, "knotd")
    try:
        wait_until(lambda: server.serving_serial() == server.serial, 20, "Knot DNS start",
                   alive=lambda: proc.poll() is None, logs=[stderr, server.log_file])
    except BaseException:
        server.stop()
        raise
    return server


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# ---- https ---------------------------------------------------------------------------


@dataclass
class HttpsServer:
    """A real https server on 127.0.0.1 (certificate from the session's CA). Paths added
    with ``add`` answer with their status and body; others 404. Requests are recorded."""

    tls: Tls
    url: str = ""
    routes: dict[str, tuple[int, bytes, str]] = field(default_factory=dict)
    requests: list[dict[str, object]] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    def ssl_context(self) -> ssl.SSLContext:
        return self.tls.ssl_context()

    def add(self, path: str, body: bytes = b"ok", status: int = 200,
            content_type: str = "text/html; charset=utf-8") -> str:
        self.routes[path] = (status, body, content_type)
        return self.url + path


def serve_https(tls: Tls) -> tuple[HttpsServer, ThreadingHTTPServer]:
    state = HttpsServer(tls)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append({"method": self.command, "path": self.path,
                                   "headers": dict(self.headers)})
            status, body, ctype = state.routes.get(self.path.split("?")[0],
                                                   (404, b"not found", "text/plain"))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.url = f"https://{HOST}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state, server


# ---- fixtures -------------------------------------------------------------------------


def register_pid(base: Path, pid: int, name: str) -> None:
    """Tell the session's watchdog (tests/servers/watchdog.py) about a server process."""
    with open(base / "pids", "a") as f:
        f.write(f"{pid} {name}\n")


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """One folder for every server of the session, readable by their unprivileged users,
    and a watchdog that stops the servers if this process dies without its teardown."""
    base = Path(tempfile.mkdtemp(prefix="nl-servers-"))
    base.chmod(0o755)
    watchdog = subprocess.Popen(
        [sys.executable, str(SERVERS / "watchdog.py"), str(os.getpid()), str(base)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    yield base
    watchdog.terminate()
    watchdog.wait(10)
    if os.environ.get("NL_TEST_KEEP_SERVERS") != "1":
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def server_tls(servers_dir: Path) -> Tls:
    """The session's CA (``ca_file``) and the server certificate every server uses."""
    return make_tls(servers_dir / "tls")


@dataclass
class MailServers:
    dovecot: Dovecot
    postfix: Postfix


@pytest.fixture(scope="session")
def mail_servers(servers_dir: Path, server_tls: Tls) -> Iterator[MailServers]:
    """Dovecot then Postfix (which authenticates through it), once per session."""
    need_binaries("Postfix and Dovecot", "/usr/sbin/postfix", "/usr/sbin/postqueue",
                  "/usr/sbin/dovecot")
    mailboxes = Mailboxes(servers_dir / "mail")
    mailboxes.create()
    greylist = Greylist()
    dovecot = postfix = None
    try:
        dovecot = start_dovecot(servers_dir, server_tls, mailboxes)
        postfix = start_postfix(servers_dir, server_tls, mailboxes, dovecot, greylist)
        yield MailServers(dovecot, postfix)
    finally:
        if postfix is not None:
            postfix.stop()
        if dovecot is not None:
            dovecot.stop()
        greylist.stop()


@pytest.fixture
def postfix(mail_servers: MailServers) -> Postfix:
    """The session's Postfix, with empty mailboxes, queue and greylist."""
    mail_servers.postfix.reset()
    return mail_servers.postfix


@pytest.fixture
def dovecot(mail_servers: MailServers) -> Dovecot:
    """The session's Dovecot, with empty mailboxes."""
    mail_servers.postfix.reset()
    return mail_servers.dovecot


@pytest.fixture(scope="session")
def dns_server_session(servers_dir: Path) -> Iterator[DnsServer]:
    need_binaries("Knot DNS", "/usr/sbin/knotd", "/usr/sbin/knotc")
    server = start_knot(servers_dir)
    yield server
    server.stop()


@pytest.fixture
def dns_server(dns_server_session: DnsServer) -> DnsServer:
    """The session's DNS server, holding only the zone's base records (SOA, NS, MX, A)."""
    if dns_server_session.records:
        dns_server_session.set_records([])
    return dns_server_session


@pytest.fixture
def smtp_sink_c(servers_dir: Path) -> Iterator[c_sink.CSink]:
    """Postfix's C smtp-sink on a free loopback port (bench/c_sink.py); stopped after."""
    if c_sink.find() is None:
        need_service("smtp-sink", "not installed (Debian package postfix; see .ci/run)")
    sink = c_sink.start()
    register_pid(servers_dir, sink.proc.pid, "smtp-sink")
    yield sink
    sink.stop()


@pytest.fixture
def https_server(server_tls: Tls) -> Iterator[HttpsServer]:
    """An https server on 127.0.0.1 with the session CA's certificate."""
    state, server = serve_https(server_tls)
    yield state
    server.shutdown()
    server.server_close()
