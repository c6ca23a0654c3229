"""The rehearsal: docs/operations.md's "Running in production", performed as written,
on this machine, against real servers.

Commands, paths and units are read from the documentation and the repository, not
restated here: the install command, the `newsletter init` and `db upgrade` lines, the
variables step 3 names, `deploy/newsletter.env.example`, the `ExecStart`/`ExecStartPre`
lines, `WorkingDirectory` and `EnvironmentFile` of `deploy/systemd/*.service`, and the
environment line of "Rotating the link-signing key". Paths under /opt, /etc and
/var/lib are mapped into a temporary folder, `runuser -u newsletter --` is dropped (no
system user is made here), and the fixed ports (8000, 9100, 910N) become free ones.

What each assertion covers:

1. **Database and broker**: a fresh PostgreSQL database (the conftest `pg_url`) and
   the Redis on 127.0.0.1; `db upgrade` must report it ready (step 4).
2. **Install**: the doc's `pip install '...[scale]'` with the wheel built from this
   tree, into a fresh venv (`--no-index` from a wheelhouse holding exactly the wheel's
   dependencies, made once per dependency list); `newsletter --version` from the venv
   is the project's version and celery (the `[scale]` extra) imports there.
3. **Configuration and secrets**: the doc's `newsletter init --config .../config.toml`
   writes the file the units run with; non-secret settings are set by uncommenting its
   lines. The env example must hold every variable step 3 names; filled in, it is the
   environment of every command below (sourced by bash for step 4, read as systemd's
   `EnvironmentFile` for the services).
4. **Schema**: the doc's command line (`cd STATE && set -a && . ENV && set +a &&
   .../newsletter db upgrade`) exits 0 and says the database is ready.
5. **Check**: `newsletter check` passes every item but the three that need a public
   name this machine cannot have (`web.base_url`, `sender.from_address`,
   `sender.list_id`): the transport item proves connect, STARTTLS and AUTH against
   Postfix, `database` and `web.secret_keys` are ✓; the SPF, DKIM and DMARC records it
   prints are published in Knot. `newsletter preview --all --out DIR` writes emails.
6. **Services**: web, scheduler (its `ExecStartPre` first) and worker run with their
   units' command lines, folder and environment; the web answers, and `newsletter
   status` lists the scheduler and the worker alive (heartbeats).
7. **Reverse proxy with TLS**: a TLS proxy doing what the doc's nginx block does (the
   session CA's certificate, `X-Forwarded-For`, `X-Forwarded-Proto: https`) in front
   of the web unit; `newsletter check --dns` then finds SPF, DKIM and DMARC published
   (✓ each) and fetches `[web] base_url` over https (✓).
8. **First send**: `newsletter ingest NAME` (a `[[sources]]` entry), `subscribers
   import`, then `newsletter send --queue --yes` (plus `--force`, for the three
   public-name items above) planned here and delivered by the worker through Debian's
   Postfix with STARTTLS and SMTP AUTH (Dovecot SASL) into each subscriber's Maildir;
   the message read from the Maildir verifies with DKIM against the key published in
   the DNS server; its one-click unsubscribe URL (RFC 8058 POST, through the proxy)
   unsubscribes its reader; `newsletter status` shows the edition sent.
9. **Rotating the link-signing key**: the doc's `NEWSLETTER_WEB__SECRET_KEYS=NEW,OLD`
   in the environment file and a restart of the services: a link signed with the old
   key (the other subscriber's one-click URL) still works, the new key is recorded as
   signing; the old key left out, the web unit refuses to start in one line.

Any step of the doc that is broken (a command that no longer exists or fails, a unit
that does not start, an env example lacking a variable, a check that fails, mail that
does not arrive or does not verify, a link that stops working) fails the test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, free_port
from .real_servers import DnsServer, MailServers, Postfix, Tls

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

DOC = ROOT / "docs" / "operations.md"
UNITS = ROOT / "deploy" / "systemd"
ENV_EXAMPLE = ROOT / "deploy" / "newsletter.env.example"
VENV, STATE, ETC = "/opt/newsletter/venv", "/var/lib/newsletter", "/etc/newsletter"
PAPERS = ROOT / "newsletter" / "data" / "sample_papers.json"


# ---- reading the documentation ----------------------------------------------------------


def production_steps() -> dict[int, str]:
    """The numbered steps of "Running in production", by number."""
    text = DOC.read_text()
    section = text.split("## Running in production", 1)[1].split("\n## ", 1)[0]
    steps = re.split(r"^(\d+)\. ", section, flags=re.M)
    return {int(steps[i]): steps[i + 1] for i in range(1, len(steps) - 1, 2)}


def code_spans(text: str) -> list[str]:
    return [" ".join(c.split()) for c in re.findall(r"`([^`]+)`", text)]


def doc_command(step: int, pattern: str) -> str:
    """The one code span of ``step`` matching ``pattern``."""
    found = [c for c in code_spans(production_steps()[step]) if re.search(pattern, c)]
    assert len(found) == 1, f"step {step}: expected one command matching {pattern!r}: {found}"
    return found[0]


def rotation_line() -> str:
    text = DOC.read_text().split("## Rotating the link-signing key", 1)[1].split("\n## ")[0]
    found = [c for c in code_spans(text) if c.startswith("NEWSLETTER_WEB__SECRET_KEYS=")]
    assert found, "the rotation section shows no NEWSLETTER_WEB__SECRET_KEYS= line"
    return found[0]


@dataclass
class Unit:
    name: str
    exec_start: list[str]
    exec_start_pre: list[list[str]]
    working_directory: str
    environment_file: str


def read_unit(path: Path, instance: str = "") -> Unit:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip().replace("%i", instance))
    return Unit(path.name, shlex.split(values["ExecStart"][0]),
                [shlex.split(v) for v in values.get("ExecStartPre", [])],
                values["WorkingDirectory"][0], values["EnvironmentFile"][0])


# ---- the machine: folders, wheel, venv ---------------------------------------------------


@dataclass
class Machine:
    root: Path
    venv: Path = field(init=False)
    state: Path = field(init=False)
    etc: Path = field(init=False)

    def __post_init__(self) -> None:
        self.venv = self.root / "opt-newsletter-venv"
        self.state = self.root / "var-lib-newsletter"
        self.etc = self.root / "etc-newsletter"
        self.state.mkdir(parents=True)
        self.etc.mkdir()

    def path(self, text: str) -> str:
        """A documented path mapped into this machine's folder."""
        return (text.replace(VENV, str(self.venv)).replace(STATE, str(self.state))
                .replace(ETC, str(self.etc)))

    @property
    def env_file(self) -> Path:
        return self.etc / "newsletter.env"

    def environment(self, **extra: str) -> dict[str, str]:
        """What systemd gives a unit: a clean environment plus the EnvironmentFile."""
        env = {"PATH": f"{self.venv}/bin:/usr/local/bin:/usr/bin:/bin",
               "HOME": str(self.state), "LANG": "C.UTF-8"}
        for line in self.env_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip().strip('"').strip("'")
        return env | extra

    def newsletter(self, *args: str, check: bool = True, timeout: float = 120,
                   **extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.venv / "bin" / "newsletter"), *args], cwd=self.state,
                              env=self.environment(**extra), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"newsletter {' '.join(args)}: exit {proc.returncode}\n"
                                 f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        return proc


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    return next(out.glob("newsletter-*.whl"))


def wheelhouse(wheel: Path, extra: str) -> Path:
    """Wheels of exactly the wheel's dependencies (with ``extra``), made once per
    dependency list (``NEWSLETTER_WHEELHOUSE``, else ~/.cache): the venv then installs
    with --no-index, isolated from this interpreter's packages, in seconds."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = sorted(line for line in z.read(meta).decode().splitlines()
                          if line.startswith("Requires-Dist:"))
    key = hashlib.sha256("\n".join([sys.version, extra, *requires]).encode()).hexdigest()[:16]
    base = Path(os.environ.get("NEWSLETTER_WHEELHOUSE",
                               Path.home() / ".cache" / "newsletter-wheelhouse"))
    house = base / key
    if not (house / ".complete").exists():
        shutil.rmtree(house, ignore_errors=True)
        house.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house),
                        f"{wheel}[{extra}]"], check=True, capture_output=True, timeout=900)
        for own in house.glob("newsletter-*.whl"):
            own.unlink()
        (house / ".complete").write_text("\n".join(requires))
    return house


def install(machine: Machine, wheel: Path) -> None:
    """Step 2's commands, with the built wheel in place of /path/to/newsletter."""
    venv_cmd = doc_command(2, r"-m venv")
    parts = [shlex.split(p) for p in venv_cmd.split("&&")]
    assert parts[0][:3] == ["python3", "-m", "venv"] and parts[0][3] == VENV, venv_cmd
    pip = parts[1]
    assert pip[0] == f"{VENV}/bin/pip" and pip[1] == "install", venv_cmd
    extra = re.fullmatch(r"/path/to/newsletter\[(\w+)\]", pip[2])
    assert extra and extra.group(1) == "scale", pip
    subprocess.run([sys.executable, "-m", "venv", str(machine.venv)], check=True, timeout=120)
    house = wheelhouse(wheel, extra.group(1))
    # Nothing from this checkout may leak in (PYTHONPATH would make pip see it installed).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_CONSTRAINT")}
    subprocess.run([machine.path(pip[0]), "install", "-q", "--no-index", "--find-links",
                    str(house), f"{wheel}[{extra.group(1)}]"], check=True, timeout=600,
                   capture_output=True, env=env)


# ---- configuration ------------------------------------------------------------------------


def set_key(text: str, section: str, key: str, value: object) -> str:
    """Uncomment ``key`` in ``[section]`` of the file `newsletter init` wrote."""
    head = f"[{section}]\n"
    start = text.index(head)
    nxt = re.search(r"^\[", text[start + len(head):], flags=re.M)
    end = start + len(head) + (nxt.start() if nxt else len(text))
    body, n = re.subn(rf"^# {key} =.*$", f"{key} = {json.dumps(value)}", text[start:end],
                      count=1, flags=re.M)
    assert n == 1, f"config.toml from `newsletter init` has no '# {key} =' in [{section}]"
    return text[:start] + body + text[end:]


def fill_env_file(machine: Machine, values: dict[str, str]) -> None:
    """deploy/newsletter.env.example copied and filled in; every variable step 3 names
    must be there to fill."""
    named = set(re.findall(r"NEWSLETTER_[A-Z_]+", production_steps()[3]))
    example = ENV_EXAMPLE.read_text()
    present = set(re.findall(r"^(NEWSLETTER_[A-Z_]+)=", example, flags=re.M))
    assert named <= present, f"the env example lacks {sorted(named - present)}"
    assert set(values) >= present, f"not filled in: {sorted(present - set(values))}"
    lines = [f"{k}={values[k]}" if re.match(r"NEWSLETTER_[A-Z_]+=", line) and
             (k := line.split("=")[0]) else line for line in example.splitlines()]
    machine.env_file.write_text("\n".join(lines) + "\n")
    machine.env_file.chmod(0o600)


# ---- the proxy of step 7 ------------------------------------------------------------------


def start_proxy(tls: Tls, upstream: list[str]) -> tuple[str, ThreadingHTTPServer]:
    """TLS in front of `newsletter web`, doing what the doc's nginx block does: the
    Host kept, X-Forwarded-For and X-Forwarded-Proto https added. ``upstream[0]`` is
    the web unit's address (changed on restart)."""

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("connection", "content-length")}
            headers |= {"X-Forwarded-For": self.client_address[0],
                        "X-Forwarded-Proto": "https"}
            try:
                r = httpx.request(self.command, upstream[0] + self.path, headers=headers,
                                  content=body, timeout=30)
            except httpx.TransportError:
                self.send_error(502)
                return
            self.send_response(r.status_code)
            for k, v in r.headers.items():
                if k.lower() not in ("connection", "transfer-encoding", "content-length",
                                     "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(r.content)

        do_GET = do_POST = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{server.server_address[1]}", server


# ---- the services of step 6 ------------------------------------------------------------------


class Services:
    """The three units, started as systemd would (their command line, folder and
    environment), and stopped with their KillSignal (SIGTERM)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.web_port = 0
        self.logs = machine.root / "logs"
        self.logs.mkdir(exist_ok=True)

    def command(self, unit: Unit, argv: list[str]) -> list[str]:
        assert unit.working_directory == STATE and unit.environment_file == \
            f"{ETC}/newsletter.env", unit  # where step 3 puts config.toml and the env file
        assert argv[0] == f"{VENV}/bin/newsletter", argv
        out = [self.machine.path(argv[0]), *argv[1:]]
        for flag in ("--port", "--metrics-port"):
            if flag in out:
                i = out.index(flag) + 1
                port = free_port()
                if flag == "--port":
                    self.web_port = port
                out[i] = str(port)
        return out

    def start(self, name: str, instance: str = "", extra: str = "") -> subprocess.Popen[str]:
        """The unit's command line (``extra`` appended to its ``ExecStart``, as the
        doc's ``systemctl edit`` adds ``--force`` for a staging installation)."""
        unit = read_unit(UNITS / name, instance)
        if extra:
            unit = dataclasses.replace(unit, exec_start=[*unit.exec_start, *shlex.split(extra)])
        for pre in unit.exec_start_pre:
            done = subprocess.run(self.command(unit, pre), cwd=self.machine.state,
                                  env=self.machine.environment(), capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, (name, pre, done.stderr)
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 - kept open while it runs
        proc = subprocess.Popen(self.command(unit, unit.exec_start), cwd=self.machine.state,
                                env=self.machine.environment(), stdout=log,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def wait_web(self, timeout: float = 60) -> str:
        url = f"http://127.0.0.1:{self.web_port}"
        deadline = time.monotonic() + timeout
        proc = self.procs["newsletter-web.service"]
        while time.monotonic() < deadline:
            assert proc.poll() is None, self.log("newsletter-web.service")
            try:
                if httpx.get(url + "/", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("the web unit did not answer\n" + self.log("newsletter-web.service"))


def wait_processes(machine: Machine, kinds: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        r = machine.newsletter("status", "--json", check=False)
        if r.returncode == 0:
            seen = {p["kind"] for p in json.loads(r.stdout)["processes"]
                    if p["state"] == "alive"}
            if kinds <= seen:
                return
        time.sleep(0.5)
    raise AssertionError(f"alive: {seen}, expected {kinds}")


# ---- the rehearsal -------------------------------------------------------------------------


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    yield Machine(tmp_path)


def _dkim_verifies(raw: bytes, dns_server: DnsServer) -> bool:
    import dkim

    resolver = dns_server.resolver()

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes:
        name = name.decode() if isinstance(name, bytes) else name
        answer = resolver.resolve(name.rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    return bool(dkim.verify(raw, dnsfunc=dnsfunc))


def _one_click(message: object, ca: Path) -> httpx.Response:
    header = str(message["List-Unsubscribe"])  # type: ignore[index]
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"  # type: ignore[index]
    url = re.search(r"<(https://[^>]+)>", header)
    assert url, header
    return httpx.post(url.group(1), data={"List-Unsubscribe": "One-Click"},
                      verify=ssl.create_default_context(cafile=str(ca)), timeout=30)


def _status(machine: Machine, email: str) -> str:
    rows = json.loads(machine.newsletter("subscribers", "list", "--json").stdout)
    return str(next(r["status"] for r in rows if r["email"] == email))


def test_production_steps_from_an_empty_server_to_the_first_send(
        machine: Machine, pg_url: str, mail_servers: MailServers, dns_server: DnsServer,
        server_tls: Tls) -> None:
    postfix: Postfix = mail_servers.postfix
    postfix.reset()
    t0 = time.monotonic()
    times: dict[str, float] = {}

    def mark(step: str) -> None:
        times[step] = time.monotonic() - t0

    # 2. Install: the wheel with [scale] in a fresh venv. It carries deploy/ (steps 3
    # and 6 copy from it), the same files as the checkout's.
    wheel = build_wheel(machine.root / "dist")
    with zipfile.ZipFile(wheel) as z:
        for path in [ENV_EXAMPLE, *sorted(UNITS.glob("*.service"))]:
            inside = "newsletter/" + str(path.relative_to(ROOT))
            assert z.read(inside) == path.read_bytes(), inside
    install(machine, wheel)
    version = subprocess.run([str(machine.venv / "bin" / "newsletter"), "--version"],
                             capture_output=True, text=True, check=True).stdout.strip()
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert project and version == f"newsletter {project.group(1)}"
    subprocess.run([str(machine.venv / "bin" / "python"), "-c", "import celery, kombu"],
                   check=True)
    mark("install")

    # 3. Configuration: `newsletter init --config .../config.toml`, then its lines.
    init = shlex.split(doc_command(3, r"newsletter init"))
    assert init[:2] == ["newsletter", "init"] and init[2] == "--config"
    config = Path(machine.path(init[3]))
    assert config == machine.state / "config.toml"
    subprocess.run([str(machine.venv / "bin" / "newsletter"), *init[1:2], "--config",
                    str(config)], check=True, capture_output=True, cwd=machine.root,
                   env={"PATH": os.environ["PATH"]})
    key = machine.root / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    text = config.read_text()
    for section, name, value in (
            ("sender", "from_address", "digest@digest.test"),
            ("sender", "postal_address", "Digest Ltd, 2 Harbour Road, Portsmouth PO1 2AB"),
            ("sender", "list_id", "papers.digest.test"),
            ("render", "dkim_selector", "rehearsal"),
            ("render", "dkim_domain", "digest.test"),
            ("render", "dkim_private_key", str(key)),
            ("smtp", "ca_file", str(server_tls.ca_file)),
            ("queue", "queue_name", f"rehearsal-{uuid.uuid4().hex[:8]}")):
        text = set_key(text, section, name, value)
    text += f'\n[[sources]]\nname = "sample"\npath = "{PAPERS}"\n'
    config.write_text(text)
    upstream = [""]
    proxy_url, proxy = start_proxy(server_tls, upstream)
    old_key = "old-" + uuid.uuid4().hex + uuid.uuid4().hex
    fill_env_file(machine, {
        "NEWSLETTER_DATABASE__URL": pg_url,
        "NEWSLETTER_QUEUE__BROKER_URL": "redis://127.0.0.1:6379/11",
        "NEWSLETTER_WEB__BASE_URL": proxy_url,
        "NEWSLETTER_WEB__SECRET_KEYS": old_key,
        "NEWSLETTER_TRANSPORT__BACKEND": "smtp",
        "NEWSLETTER_SMTP__HOST": postfix.host,
        "NEWSLETTER_SMTP__PORT": str(postfix.submission_port),
        "NEWSLETTER_SMTP__SECURITY": "starttls",
        "NEWSLETTER_SMTP__USERNAME": postfix.smtp_user,
        "NEWSLETTER_SMTP__PASSWORD": postfix.smtp_password,
        "NEWSLETTER_METRICS__TOKEN": uuid.uuid4().hex})
    services = Services(machine)
    try:
        # 4. Schema: the doc's line, run by bash (the env file is shell syntax too).
        schema = doc_command(4, r"db upgrade")
        assert schema.startswith("cd /var/lib/newsletter && set -a && "
                                 ". /etc/newsletter/newsletter.env && set +a && "), schema
        line = machine.path(schema.replace("runuser -u newsletter -- ", ""))
        proc = subprocess.run(["bash", "-c", line], cwd=machine.state, capture_output=True,
                              text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(machine.state)})
        assert proc.returncode == 0, proc.stderr
        assert "database ready: postgresql+psycopg://" in proc.stderr

        # 5. Check: all but the public-name items; publish the records it prints.
        assert "newsletter check" in production_steps()[5]
        r = machine.newsletter("check", "--json", check=False)
        assert r.returncode == 1, r.stdout
        items = {i["key"]: i for i in json.loads(r.stdout)["items"]}
        failed = {k for k, i in items.items() if not i["ok"]}
        assert failed == {"web.base_url", "sender.from_address", "sender.list_id"}, items
        transport = items["transport (smtp)"]["detail"]
        assert "STARTTLS, AUTH succeeded" in transport, transport
        assert items["database"]["ok"] and items["web.secret_keys"]["ok"]
        records = []
        for name in ("spf", "dkim.dns", "dmarc"):
            found = re.match(r'publish (\S+) TXT "([^"]+)"', items[name]["detail"])
            assert found, items[name]
            value = found.group(2).replace("ip4:<the public address your relay sends from>",
                                           "ip4:127.0.0.1")
            records.append((found.group(1).replace("your-domain.net", "digest.test") + ".",
                            "TXT", value))
        dns_server.set_records(records)
        preview = doc_command(5, r"newsletter preview")
        args = shlex.split(preview)[1:]
        args[args.index("--out") + 1] = str(machine.root / "preview")

        mark("check")
        # 6. Services, from their units.
        services.start("newsletter-scheduler.service")
        # (the public-name items above fail here: a staging installation's worker gets
        # --force as the doc says, or it refuses to start, as `send` does without it)
        services.start("newsletter-worker@.service", instance="1", extra="--force")
        services.start("newsletter-web.service")
        web_url = services.wait_web()
        upstream[0] = web_url
        wait_processes(machine, {"run", "worker"})

        # 7. The TLS proxy is up: `check --dns` finds the records and the public URL.
        r = machine.newsletter("check", "--dns", "--json", "--nameserver",
                               f"{dns_server.host}:{dns_server.port}", check=False,
                               SSL_CERT_FILE=str(server_tls.ca_file))
        items = {i["key"]: i for i in json.loads(r.stdout)["items"]}
        for name in ("dns.spf", "dns.dkim", "dns.dmarc", "web.https"):
            assert items[name]["ok"], items[name]

        mark("services")
        # 8. First send: ingest a [[sources]] entry, import, send through the queue.
        ingest = machine.newsletter("ingest", "sample")
        assert re.search(r"stored: \d+ new", ingest.stderr), ingest.stderr
        # Their send hour lies ahead, so the scheduler leaves them to the send below.
        hour = (time.gmtime().tm_hour + 2) % 24
        people = machine.root / "people.csv"
        people.write_text("email,name,keywords,tz,hour\n"
                          f'ada@digest.test,Ada,"state space models, vision transformer",'
                          f"UTC,{hour}\n"
                          f'bob@digest.test,Bob,"graph neural networks",UTC,{hour}\n')
        imported = machine.newsletter("subscribers", "import", str(people))
        assert "imported 2" in imported.stderr, imported.stderr
        r = machine.newsletter(*args)  # step 5's preview, now that there is something
        assert list((machine.root / "preview").glob("*.html")), r.stderr
        send = shlex.split(doc_command(8, r"send --queue"))
        assert send == ["newsletter", "send", "--queue", "--yes"], send
        r = machine.newsletter(*send[1:], "--force", "--wait", "120", timeout=180,
                               check=False)
        assert r.returncode == 0, (r.stderr, services.log("newsletter-worker@.service"))
        ada = postfix.wait_for("ada", 1)[-1]
        bob = postfix.wait_for("bob", 1)[-1]
        assert ada["From"].addresses[0].addr_spec == "digest@digest.test"
        assert ada["To"].addresses[0].addr_spec == "ada@digest.test"
        raw = postfix.mailboxes.raw_messages("ada")[-1]
        assert _dkim_verifies(raw, dns_server), "DKIM does not verify"
        # Received by the submission port: STARTTLS and SMTP AUTH (Dovecot SASL).
        assert b"with ESMTPSA" in raw and b"(Authenticated sender: digest@digest.test)" in raw
        assert _one_click(ada, server_tls.ca_file).status_code == 200
        assert _status(machine, "ada@digest.test") == "unsubscribed"
        status = json.loads(machine.newsletter("status", "--json").stdout)
        assert status["counts"]["sent"] == 2

        mark("send")
        # 9. Rotation as the doc says: NEW first, OLD kept, in the env file; restart.
        rotation = rotation_line()
        new_key = "new-" + uuid.uuid4().hex + uuid.uuid4().hex
        assert rotation == "NEWSLETTER_WEB__SECRET_KEYS=NEW,OLD", rotation
        env_text = machine.env_file.read_text()
        name, _, keys = rotation.partition("=")
        machine.env_file.write_text(env_text.replace(
            f"{name}={old_key}", f"{name}={keys.replace('NEW', new_key).replace('OLD', old_key)}"))
        services.stop_all()
        services.start("newsletter-scheduler.service")
        # (the public-name items above fail here: a staging installation's worker gets
        # --force as the doc says, or it refuses to start, as `send` does without it)
        services.start("newsletter-worker@.service", instance="1", extra="--force")
        services.start("newsletter-web.service")
        upstream[0] = services.wait_web()
        assert _one_click(bob, server_tls.ca_file).status_code == 200
        assert _status(machine, "bob@digest.test") == "unsubscribed"
        shown = json.loads(machine.newsletter("keys", "show").stdout)
        assert shown["signing_with"] == hashlib.sha256(new_key.encode()).hexdigest()[:16]
        # The old key left out: the web unit refuses to start, in one line.
        services.stop("newsletter-web.service")
        machine.env_file.write_text(env_text.replace(old_key, new_key))
        refused = services.start("newsletter-web.service")
        assert refused.wait(60) != 0
        lines = services.log("newsletter-web.service").strip().splitlines()
        last = json.loads(lines[-1])  # the unit logs JSON lines: its last one too
        assert last["level"] == "error" and "retired_keys" in last["msg"], lines[-3:]
    finally:
        services.stop_all()
        proxy.shutdown()
        proxy.server_close()
    mark("rotation")
    print("rehearsal, seconds from the start:", {k: round(v) for k, v in times.items()})

