"""Runs a real OpenStack Nova for blazar-server's tests: nova 34.0.0 (nova-api, conductor,
scheduler with blazar-nova's BlazarFilter, N fake-driver computes), placement 16.0.0 and glance
33.0.0 on the machine's MariaDB and RabbitMQ, every run isolated from every other one.

Run it with the Python of the nova virtualenv (tests/nova/requirements-nova.txt); it installs
nothing and uses only the standard library, so that the small subcommands start fast. Subcommands:

  start --dir DIR --glance-venv VENV [--computes N] [--watch-pid PID] [--cache-dir CACHE]
      Makes the run's databases (nova_<tag>_api, _cell0, _cell1, _placement) and RabbitMQ vhost
      (nova_<tag>), fills them (from a schema template in CACHE when there is one; the first run
      builds it with the real db syncs), starts the Neutron stub, glance-api, placement-api,
      nova-api (noauth: `X-Auth-Token: user:project`), nova-conductor, nova-scheduler and N
      nova-computes (compute-a, compute-b, ...) on free ports, waits until os-hypervisors lists
      all N up, creates a tiny image and flavor, and prints ONE line of JSON on stdout. Progress
      and timings go to stderr, every service's logs to DIR/logs. The Neutron stub
      (neutron_stub.py) is the one piece that is not the real thing; conductor, scheduler and
      computes are forked from one import of their modules (nova_zygote.py; NOVA_HARNESS_ZYGOTE=0
      runs their console scripts instead).
  stop --dir DIR
      Kills every process of the run, drops its databases and vhost. DIR (logs) stays.
  stop-api --dir DIR / start-api --dir DIR
      Stops / starts only the noauth nova-api, on the same port (tests of "Nova is down").
  start-keystone-api --dir DIR --auth-url URL --username U --password P --project-name PR
                     [--user-domain-name Default] [--project-domain-name Default]
      Starts a second nova-api whose pipeline is nova's own (keystonemiddleware authtoken against
      that Keystone) on another free port; prints JSON with its compute_url.
  watchdog --dir DIR   (started by `start`)
      Waits for the watched process to end, however it ends, then does what `stop` does.

Nothing of a run outlives its owner (--watch-pid, default the caller): the watchdog cleans up
when the owner is gone, and every `start` first cleans up the runs of owners that are gone (a
registry table, nova_harness.runs, says which tags exist and who owns them; every process of a run
carries NOVA_HARNESS_TAG=<tag> in its environment, which is how leftovers are found).

Environment: NOVA_HARNESS_MYSQL (user:password@host:port, default root:@127.0.0.1:3306) and
NOVA_HARNESS_RABBIT (user:password@host:port, default guest:guest@127.0.0.1:5672; the vhost is
made and removed with rabbitmqctl, so RabbitMQ must be local).
"""

import argparse
import concurrent.futures
import fcntl
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REGISTRY = "nova_harness"
STATE_FILE = "harness-state.json"
LOCK_FILE = "harness.lock"
ADMIN_TOKEN = "admin:admin"
IMAGE_NAME = "harness-tiny"
FLAVOR_ID = "harness.tiny"
# Bump when the way templates are built changes (their key also holds the installed versions).
TEMPLATE_VERSION = "1"
DATABASES = ("api", "cell0", "cell1", "placement")
CELL0_UUID = "00000000-0000-0000-0000-000000000000"
TAG = re.compile(r"^t[0-9a-f]{8}$")
HTTP_TIMEOUT = 10.0
SERVICE_TIMEOUT = 180.0  # one service answering (imports on a busy 2-core machine)
HYPERVISORS_TIMEOUT = 240.0  # every compute listed and up
SQL_TIMEOUT = 300.0
API_MICROVERSION = "2.53"
STARTUP_NICENESS = 10


class HarnessError(Exception):
    """A failure to report with the tails of these logs (service names; None: every log)."""

    def __init__(self, msg, logs=None):
        super().__init__(msg)
        self.logs = logs


def log(msg):
    print(f"[nova-harness] {msg}", file=sys.stderr, flush=True)


def tail(path, lines=30):
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return "\n".join(text[-lines:])


def report_logs(dir_, names):
    logs = Path(dir_) / "logs"
    if not logs.is_dir():
        return
    if names is None:
        paths = sorted(logs.iterdir())
        lines = 15
    else:
        paths = [logs / f"{n}{ext}" for n in names for ext in (".log", ".out")]
        lines = 40
    for path in paths:
        text = tail(path, lines)
        if text:
            print(f"--- last lines of {path} ---\n{text}", file=sys.stderr, flush=True)
        elif names is not None:
            print(f"--- {path}: {'empty' if path.exists() else 'missing'} ---", file=sys.stderr,
                  flush=True)


# ---------------------------------------------------------------- processes


def boot_id():
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def proc_start_time(pid):
    """The kernel's start time of a live process (None if it is gone), so that a recycled pid is
    never taken for the process we meant."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        return None
    # Fields 3 (state) and 22 (start time); the command name (field 2) may hold spaces, so count
    # from the last ')'. A zombie is gone for our purposes: init may take a while to reap it.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def is_ours(entry):
    """True while the process recorded in entry ({pid, start}) still runs."""
    return bool(entry) and proc_start_time(entry["pid"]) == entry["start"]


def owner_alive(owner):
    return (
        owner["machine"] == socket.gethostname()
        and owner["boot_id"] == boot_id()
        and proc_start_time(owner["pid"]) == owner["start"]
    )


def kill_entry(entry, sig=signal.SIGKILL):
    """Kills the process group that the recorded process leads (every service runs in a session
    of its own), but only while the pid is still that process."""
    if not is_ours(entry):
        return
    try:
        os.killpg(entry["pid"], sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(entry["pid"], sig)


def run_cwd(dir_, tag):
    """The working directory of every process of a run. It marks them: gunicorn and oslo.service
    overwrite their environment with setproctitle (so NOVA_HARNESS_TAG is not always readable),
    but a cwd survives that, forks, and even the removal of the directory."""
    return Path(dir_) / f"cwd-{tag}"


def tagged_pids(tag):
    needle = f"NOVA_HARNESS_TAG={tag}".encode()
    suffix = f"/cwd-{tag}"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        if cwd.endswith(suffix) or cwd.endswith(f"{suffix} (deleted)"):
            found.append(int(entry))
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def kill_tagged(tag, exclude=()):
    """SIGKILLs every process of the run (by its cwd or environment: gunicorn workers, forked
    conductor workers, anything whose group leader is already gone) until none is left."""
    deadline = time.monotonic() + 10
    while True:
        pids = [p for p in tagged_pids(tag) if p not in exclude and proc_start_time(p) is not None]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            log(f"processes of run {tag} survive SIGKILL: {pids}")
            return
        time.sleep(0.1)


# ---------------------------------------------------------------- MariaDB and RabbitMQ


def _endpoint(var, default):
    spec = os.environ.get(var) or default
    cred, _, addr = spec.rpartition("@")
    user, _, password = cred.partition(":")
    host, _, port = addr.partition(":")
    return {"user": user, "password": password, "host": host, "port": int(port)}


MYSQL = _endpoint("NOVA_HARNESS_MYSQL", "root:@127.0.0.1:3306")
RABBIT = _endpoint("NOVA_HARNESS_RABBIT", "guest:guest@127.0.0.1:5672")


def tool(*names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise HarnessError(f"none of {', '.join(names)} is on PATH")


def mysql_cmd(program, *args):
    cmd = [program, "--no-defaults", "-h", MYSQL["host"], "-P", str(MYSQL["port"])]
    cmd += ["-u", MYSQL["user"], *args]
    env = dict(os.environ)
    env.pop("MYSQL_PWD", None)
    if MYSQL["password"]:
        env["MYSQL_PWD"] = MYSQL["password"]
    return cmd, env


def sql(statement, database=None, stdin=None):
    """Runs SQL with the mysql client; returns the rows (lists of strings)."""
    cmd, env = mysql_cmd(
        tool("mysql", "mariadb"), "--batch", "--skip-column-names", "--connect-timeout=10"
    )
    if statement is not None:
        cmd += ["-e", statement]
    if database:
        cmd.append(database)
    try:
        r = subprocess.run(
            cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
            capture_output=True, env=env, timeout=SQL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"mysql took over {SQL_TIMEOUT:.0f} s: {statement}") from None
    if r.returncode != 0:
        raise HarnessError(f"mysql failed ({r.returncode}) on {statement!r}: {r.stderr.decode().strip()}")
    return [line.split("\t") for line in r.stdout.decode().splitlines()]


def quote(value):
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def db_names(tag):
    assert TAG.match(tag), tag
    return {name: f"nova_{tag}_{name}" for name in DATABASES}


def vhost_name(tag):
    assert TAG.match(tag), tag
    return f"nova_{tag}"


def db_url(database):
    user = urllib.parse.quote(MYSQL["user"], safe="")
    password = urllib.parse.quote(MYSQL["password"], safe="")
    return f"mysql+pymysql://{user}:{password}@{MYSQL['host']}:{MYSQL['port']}/{database}?charset=utf8"


def transport_url(vhost):
    user = urllib.parse.quote(RABBIT["user"], safe="")
    password = urllib.parse.quote(RABBIT["password"], safe="")
    return f"rabbit://{user}:{password}@{RABBIT['host']}:{RABBIT['port']}/{vhost}"


def rabbitmqctl(*args, check=True):
    # rabbitmqctl reads stdin (and eats a caller's loop input): always /dev/null.
    try:
        r = subprocess.run(
            [tool("rabbitmqctl"), "-q", *args], stdin=subprocess.DEVNULL,
            capture_output=True, timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"rabbitmqctl {' '.join(args)} took over 60 s") from None
    if check and r.returncode != 0:
        raise HarnessError(
            f"rabbitmqctl {' '.join(args)} failed ({r.returncode}): "
            f"{(r.stderr or r.stdout).decode().strip()}"
        )
    return r


def create_vhost(vhost):
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, RABBIT["user"], ".*", ".*", ".*")


def registry_init():
    sql(
        f"CREATE DATABASE IF NOT EXISTS {REGISTRY}; "
        f"CREATE TABLE IF NOT EXISTS {REGISTRY}.runs ("
        "tag VARCHAR(16) NOT NULL PRIMARY KEY, machine VARCHAR(255) NOT NULL, "
        "boot_id VARCHAR(64) NOT NULL, owner_pid INT NOT NULL, owner_start BIGINT NOT NULL, "
        "dir TEXT NOT NULL, created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )


def registry_add(owner, dir_):
    """A new tag, recorded (before anything of it exists) with its owner."""
    for _ in range(5):
        tag = "t" + secrets.token_hex(4)
        try:
            sql(
                f"INSERT INTO {REGISTRY}.runs (tag, machine, boot_id, owner_pid, owner_start, dir) "
                f"VALUES ({quote(tag)}, {quote(owner['machine'])}, {quote(owner['boot_id'])}, "
                f"{int(owner['pid'])}, {int(owner['start'])}, {quote(dir_)})"
            )
            return tag
        except HarnessError as e:
            if "Duplicate" not in str(e):
                raise
    raise HarnessError("could not find a free tag")


def drop_run_resources(tag):
    """Drops the run's databases and vhost (whatever of them exists) and its registry row."""
    names = db_names(tag)

    def drop(name):
        sql(f"DROP DATABASE IF EXISTS {name}")

    with concurrent.futures.ThreadPoolExecutor(len(names) + 1) as pool:
        futures = [pool.submit(drop, n) for n in names.values()]
        futures.append(pool.submit(rabbitmqctl, "delete_vhost", vhost_name(tag), check=False))
        for f in futures:
            f.result()
    sql(f"DELETE FROM {REGISTRY}.runs WHERE tag = {quote(tag)}")


def cleanup_run(tag, dir_, exclude=()):
    """Everything `stop` does, for any run: kill, drop, unregister."""
    state = read_state(dir_) if dir_ else None
    if state and state.get("tag") == tag:
        # The driver first (a `start` still running would start more), then the watchdog (so it
        # does not race us), then every service group.
        for key in ("driver", "watchdog"):
            entry = state.get(key)
            if entry and entry["pid"] not in exclude:
                kill_entry(entry)
        for entry in state.get("procs", {}).values():
            kill_entry(entry)
    kill_tagged(tag, exclude=set(exclude) | {os.getpid()})
    drop_run_resources(tag)
    if state and state.get("tag") == tag:
        # Without the state lock: the caller may hold it, and the write is atomic anyway.
        state = read_state(dir_) or state
        state["stopped"] = True
        write_state(dir_, state)


def reap_dead_runs(skip_dir=None):
    """Cleans up every registered run of this machine whose owner is gone (the backstop for a
    watchdog that was killed too), and removes sibling run directories of dead owners."""
    me = socket.gethostname()
    reaped = []
    for tag, machine, boot, pid, start, dir_ in sql(
        f"SELECT tag, machine, boot_id, owner_pid, owner_start, dir FROM {REGISTRY}.runs"
    ):
        if machine != me or not TAG.match(tag):
            continue
        owner = {"machine": machine, "boot_id": boot, "pid": int(pid), "start": int(start)}
        if owner_alive(owner):
            continue
        log(f"cleaning up run {tag} of a gone owner (pid {pid}, {dir_})")
        cleanup_run(tag, Path(dir_) if Path(dir_, STATE_FILE).exists() else None)
        reaped.append(tag)
    if skip_dir is not None:
        parent = Path(skip_dir).parent
        for sibling in parent.iterdir() if parent.is_dir() else []:
            state = read_state(sibling)
            if sibling == Path(skip_dir) or not state or "owner" not in state:
                continue
            if not owner_alive(state["owner"]):
                if "tag" in state and not state.get("stopped"):
                    cleanup_run(state["tag"], sibling)  # unregistered, yet maybe running
                shutil.rmtree(sibling, ignore_errors=True)
    return reaped


# ---------------------------------------------------------------- state


def read_state(dir_):
    try:
        return json.loads((Path(dir_) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_state(dir_, state):
    path = Path(dir_) / STATE_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


class state_lock:
    """An exclusive lock on DIR's state for the harness commands that change it (bounded)."""

    def __init__(self, dir_, timeout=600.0):
        self.path = Path(dir_) / LOCK_FILE
        self.timeout = timeout

    def __enter__(self):
        self.file = open(self.path, "a")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"{self.path} stayed locked for {self.timeout:.0f} s") from None
                time.sleep(0.1)

    def __exit__(self, *exc):
        self.file.close()


def load_state(dir_):
    state = read_state(dir_)
    if not state or "tag" not in state:
        raise HarnessError(f"no {STATE_FILE} in {dir_}: run `start` first")
    if state.get("stopped"):
        raise HarnessError(f"the run in {dir_} was stopped")
    return state


# ---------------------------------------------------------------- HTTP

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, body=None, headers=None, data=None, timeout=HTTP_TIMEOUT):
    """One request; returns (status, parsed JSON or text). Connection errors raise."""
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def nova(state, method, path, body=None, microversion=API_MICROVERSION, ok=(200, 202, 204)):
    status, out = http(
        method, state["compute_url"] + path, body,
        {"X-Auth-Token": ADMIN_TOKEN, "OpenStack-API-Version": f"compute {microversion}"},
        timeout=60,
    )
    if ok and status not in ok:
        raise HarnessError(f"nova-api {method} {path} -> {status}: {out}", ["nova-api"])
    return status, out


# ---------------------------------------------------------------- configuration


def render(template, dest, values):
    text = Path(template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise HarnessError(f"{template}: no value for {sorted(set(left))}")
    Path(dest).write_text(text)


def host_names(n):
    """compute-a ... compute-z, then compute-aa, compute-ab, ..."""
    names = []
    for i in range(n):
        suffix, k = "", i
        while True:
            suffix = chr(ord("a") + k % 26) + suffix
            k = k // 26 - 1
            if k < 0:
                break
        names.append(f"compute-{suffix}")
    return names


def bind_socket(port=0):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        raise HarnessError(f"cannot bind 127.0.0.1:{port}: {e}") from None
    sock.set_inheritable(True)
    return sock


def write_configs(dir_, state):
    conf = dir_ / "conf"
    (conf / "glance").mkdir(parents=True, exist_ok=True)
    dbs = state["databases"]
    values = {
        "DIR": dir_,
        "TRANSPORT_URL": transport_url(state["vhost"]),
        "API_DB_URL": db_url(dbs["api"]),
        "CELL1_DB_URL": db_url(dbs["cell1"]),
        "PLACEMENT_DB_URL": db_url(dbs["placement"]),
        "PLACEMENT_URL": state["placement_url"],
        "GLANCE_URL": state["image_url"],
        "NEUTRON_URL": state["neutron_url"],
    }
    render(HERE / "nova.conf", conf / "nova.conf", values)
    (conf / "cell0.conf").write_text(
        "# Only for the cell0 schema sync: nova.conf with cell0 as the local cell.\n"
        f"[database]\nconnection = {db_url(dbs['cell0'])}\n"
    )
    (conf / "placement").mkdir(exist_ok=True)
    render(HERE / "placement.conf", conf / "placement" / "placement.conf", values)
    render(HERE / "glance" / "glance-api.conf", conf / "glance" / "glance-api.conf", values)
    shutil.copy(HERE / "glance" / "glance-api-paste.ini", conf / "glance" / "glance-api-paste.ini")
    for name in ("api-paste.ini", "api-paste-keystone.ini", "nova_noauth.py", "nova_api_wsgi.py",
                 "neutron_stub.py", "nova_zygote.py"):
        shutil.copy(HERE / name, conf / name)
    for host in state["hosts"]:
        # Not next to a compute_id: nova looks for one in the directory of every --config-file.
        render(HERE / "compute.conf", conf / f"{host}.conf", dict(values, HOST=host))
        (dir_ / "state" / host / "instances").mkdir(parents=True, exist_ok=True)
    for sub in ("nova", "lock", "glance/images", "glance/staging", "glance/tasks"):
        (dir_ / "state" / sub).mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------- databases


def run_tool(run, name, argv):
    """Runs a manage command to completion, its output in logs/setup.log."""
    t = time.monotonic()
    r = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL, capture_output=True,
                       env=run.env, cwd=run.cwd, timeout=600)
    with open(run.dir / "logs" / "setup.log", "ab") as out:
        out.write(f"$ {' '.join(map(str, argv))}  [{time.monotonic() - t:.1f} s, rc {r.returncode}]\n".encode())
        out.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise HarnessError(f"{name} failed ({r.returncode})", ["setup"])


def template_key(glance_venv):
    h = hashlib.sha256(TEMPLATE_VERSION.encode())
    h.update(sys.version.encode())
    for venv in (BIN.parent, Path(glance_venv)):
        for dist in sorted(venv.glob("lib/python*/site-packages/*.dist-info")):
            if re.match(r"(nova|openstack_placement|glance|SQLAlchemy|alembic|oslo\.db)-", dist.name, re.I):
                h.update(dist.name.encode())
    return h.hexdigest()[:16]


def build_databases(ctx):
    """The real thing: nova-manage, placement-manage and glance-manage, the independent ones at
    once (most of their time is Python imports and DDL waits)."""
    c = ["--config-file", str(ctx.dir / "conf" / "nova.conf")]
    manage = str(BIN / "nova-manage")
    cell0 = db_url(ctx.state["databases"]["cell0"])

    def api_chain():
        run_tool(ctx, "nova-manage api_db sync", [manage, *c, "api_db", "sync"])
        run_tool(ctx, "nova-manage cell_v2 map_cell0",
                 [manage, *c, "cell_v2", "map_cell0", "--database_connection", cell0])
        run_tool(ctx, "nova-manage cell_v2 create_cell",
                 [manage, *c, "cell_v2", "create_cell", "--name", "cell1", "--verbose"])

    jobs = [
        api_chain,
        lambda: run_tool(ctx, "nova-manage db sync (cell1)",
                         [manage, *c, "db", "sync", "--local_cell"]),
        lambda: run_tool(ctx, "nova-manage db sync (cell0)",
                         [manage, *c, "--config-file", str(ctx.dir / "conf" / "cell0.conf"),
                          "db", "sync", "--local_cell"]),
        lambda: run_tool(ctx, "placement-manage db sync",
                         [str(BIN / "placement-manage"), "--config-file",
                          str(ctx.dir / "conf" / "placement" / "placement.conf"), "db", "sync"]),
        lambda: run_tool(ctx, "glance-manage db sync",
                         [str(ctx.glance_bin / "glance-manage"), "--config-file",
                          str(ctx.dir / "conf" / "glance" / "glance-api.conf"), "db", "sync"]),
    ]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        for f in [pool.submit(j) for j in jobs]:
            f.result()


def dump_template(ctx, template):
    building = template.parent / f"building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    dump = tool("mysqldump", "mariadb-dump")
    for name, database in ctx.state["databases"].items():
        cmd, env = mysql_cmd(dump, "--skip-comments", "--skip-dump-date", "--single-transaction",
                             database)
        with open(building / f"{name}.sql", "wb") as out:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.PIPE, env=env, timeout=SQL_TIMEOUT)
        if r.returncode != 0:
            raise HarnessError(f"mysqldump {database} failed: {r.stderr.decode().strip()}")
    shutil.copy2(ctx.dir / "state" / "glance" / "glance.sqlite", building / "glance.sqlite")
    (building / "done").write_text("")
    shutil.rmtree(template, ignore_errors=True)
    building.rename(template)


def load_template(ctx, template):
    """Four schema dumps loaded at once (about a second, against tens of seconds of db syncs),
    then the cell mappings pointed at this run's cell databases and vhost."""
    dbs = ctx.state["databases"]

    def load(name):
        with open(template / f"{name}.sql", "rb") as dump:
            sql(None, database=dbs[name], stdin=dump)

    with concurrent.futures.ThreadPoolExecutor(len(dbs)) as pool:
        for f in [pool.submit(load, n) for n in dbs]:
            f.result()
    sql(
        f"UPDATE cell_mappings SET database_connection = {quote(db_url(dbs['cell0']))}, "
        f"transport_url = 'none:///' WHERE uuid = {quote(CELL0_UUID)}; "
        f"UPDATE cell_mappings SET database_connection = {quote(db_url(dbs['cell1']))}, "
        f"transport_url = {quote(transport_url(ctx.state['vhost']))} WHERE name = 'cell1'",
        database=dbs["api"],
    )
    shutil.copy2(template / "glance.sqlite", ctx.dir / "state" / "glance" / "glance.sqlite")


def prepare_databases(ctx, cache_dir):
    names = ctx.state["databases"].values()
    sql("; ".join(f"CREATE DATABASE {n}" for n in names))
    if cache_dir is None:
        build_databases(ctx)
        return "built"
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = template_key(ctx.glance_bin.parent)
    template = cache / f"template-{key}"
    with open(cache / f"template-{key}.lock", "w") as lock:
        # Loaders share the lock; a builder holds it alone, and the others wait, then load.
        fcntl.flock(lock, fcntl.LOCK_SH)
        if (template / "done").exists():
            load_template(ctx, template)
            return "loaded from template"
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (template / "done").exists():
            load_template(ctx, template)
            return "loaded from template"
        for stale in cache.glob("building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        # Templates of other versions are dead weight, unless someone is loading one now.
        for old in cache.glob("template-*"):
            if not old.is_dir() or old == template:
                continue
            with open(f"{old}.lock", "w") as old_lock:
                try:
                    fcntl.flock(old_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                shutil.rmtree(old, ignore_errors=True)
        build_databases(ctx)
        dump_template(ctx, template)
        return "built, template saved"


# ---------------------------------------------------------------- services


class Run:
    """One `start` (or start-api, start-keystone-api) at work on DIR's state."""

    def __init__(self, dir_, state, glance_venv):
        self.dir = dir_
        self.state = state
        self.glance_bin = Path(glance_venv) / "bin"
        self.cwd = run_cwd(dir_, state["tag"])
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.popen = {}
        self.zygote = None
        self.lock = threading.Lock()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OS_", "PYTHON"))
               and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update(PYTHONWARNINGS="ignore", NOVA_HARNESS_TAG=state["tag"],
                   no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
        self.env = env

    def save(self):
        with self.lock:
            write_state(self.dir, self.state)

    def spawn(self, name, argv, env=None, sock=None, nice=False):
        """Starts a service in a session of its own, its output in logs/NAME.out. A nice one
        yields the CPU to the services on the critical path until `unnice`."""
        out = open(self.dir / "logs" / f"{name}.out", "ab")
        fds = (sock.fileno(),) if sock is not None else ()
        if nice:
            argv = [tool("nice"), "-n", str(STARTUP_NICENESS), *argv]  # it execs: same pid
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=dict(self.env, **(env or {})), cwd=self.cwd,
                start_new_session=True, pass_fds=fds,
            )
        finally:
            out.close()
            if sock is not None:
                sock.close()  # the service holds it now
        start = proc_start_time(proc.pid)
        self.popen[name] = proc
        with self.lock:
            self.state["procs"][name] = {"pid": proc.pid, "start": start}
            write_state(self.dir, self.state)
        return proc

    def gunicorn(self, name, bin_dir, app, sock, threads, env, nice=False):
        argv = [bin_dir / "gunicorn", "--bind", f"fd://{sock.fileno()}", "--workers", "1",
                "--threads", threads, "--timeout", "120", "--graceful-timeout", "5",
                # Its default control socket is one path shared by every gunicorn of the user.
                "--no-control-socket", "--error-logfile", "-", app]
        return self.spawn(name, argv, env, sock, nice)

    def unnice(self, name):
        """Back to normal priority, the whole process group (gunicorn's worker too)."""
        entry = self.state["procs"].get(name)
        if is_ours(entry):
            try:
                os.setpriority(os.PRIO_PGRP, entry["pid"], 0)
            except OSError as e:
                log(f"cannot renice {name}: {e}")

    def alive(self, name):
        proc = self.popen.get(name)
        if proc is not None:
            return proc.poll() is None
        return is_ours(self.state["procs"].get(name))

    def wait(self, what, check, names, timeout=SERVICE_TIMEOUT):
        """Polls check() (a truthy result ends the wait) while the named services live; fails
        with their logs on a death or at the deadline."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            for name in names:
                if not self.alive(name):
                    raise HarnessError(f"{name} exited while waiting for {what}", [name])
            try:
                result = check()
                if result:
                    return result
            except Exception as e:  # noqa: BLE001 - any failure means "not yet"
                last = e
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"no {what} within {timeout:.0f} s (last: {last})", names)
            time.sleep(0.25)

    def answers(self, url, headers=None, want=(200,)):
        def check():
            status, body = http("GET", url, headers=headers, timeout=5)
            if status not in want:
                raise RuntimeError(f"{status}: {str(body)[:200]}")
            return True
        return check

    # ---- the services

    def start_neutron(self, sock):
        self.spawn("neutron-stub", [BIN / "python", self.dir / "conf" / "neutron_stub.py",
                                    "--fd", sock.fileno()], sock=sock)

    def start_placement(self, sock):
        self.gunicorn("placement", BIN, "placement.wsgi.api:application", sock, 4,
                      {"OS_PLACEMENT_CONFIG_DIR": str(self.dir / "conf" / "placement")})

    def start_glance(self, sock, nice=False):
        self.gunicorn("glance", self.glance_bin, "glance.wsgi.api:application", sock, 4,
                      {"OS_GLANCE_CONFIG_DIR": str(self.dir / "conf" / "glance")}, nice)

    def start_api(self, name, sock, config_files, nice=False):
        self.gunicorn(name, BIN, "nova_api_wsgi:application", sock, 8, {
            "PYTHONPATH": str(self.dir / "conf"),
            "OS_NOVA_CONFIG_DIR": str(self.dir / "conf"),
            "OS_NOVA_CONFIG_FILES": ";".join(config_files),
            "NOVA_HARNESS_API_LOG": str(self.dir / "logs" / f"{name}.log"),
        }, nice)

    def start_nova_service(self, name, binary, extra_conf=None, nice=False):
        args = ["--config-file", self.dir / "conf" / "nova.conf"]
        if extra_conf:
            args += ["--config-file", extra_conf]
        args += ["--log-file", self.dir / "logs" / f"{name}.log"]
        if self.zygote is None:
            self.spawn(name, [BIN / binary, *args], nice=nice)
            return
        pid = self.zygote.spawn(binary, args, self.dir / "logs" / f"{name}.out", nice)
        with self.lock:
            self.state["procs"][name] = {"pid": pid, "start": proc_start_time(pid)}
            write_state(self.dir, self.state)

    def wait_api(self, name, url):
        self.wait(f"{name} answering {url}",
                  self.answers(url, {"X-Auth-Token": ADMIN_TOKEN}), [name])


class Zygote:
    """nova_zygote.py: forks conductor, scheduler and computes from one import (see there)."""

    def __init__(self, run):
        self.run = run
        out = open(run.dir / "logs" / "nova-zygote.out", "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "python"), str(run.dir / "conf" / "nova_zygote.py"),
             str(run.dir / "conf" / "nova.conf")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out, env=run.env,
            cwd=run.cwd, start_new_session=True,
        )
        out.close()
        with run.lock:
            run.state["procs"]["nova-zygote"] = {
                "pid": self.proc.pid, "start": proc_start_time(self.proc.pid)}
            write_state(run.dir, run.state)

    def spawn(self, binary, argv, out, nice=False):
        request = {"binary": binary, "argv": [str(a) for a in argv], "out": str(out),
                   "nice": STARTUP_NICENESS if nice else 0}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise HarnessError("nova_zygote.py exited", ["nova-zygote"]) from None
        # The first answer waits for the zygote's imports.
        ready, _, _ = select.select([self.proc.stdout], [], [], SERVICE_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            raise HarnessError(f"nova_zygote.py did not start {binary}", ["nova-zygote"])
        return json.loads(line)["pid"]

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        with self.run.lock:
            self.run.state["procs"].pop("nova-zygote", None)
            write_state(self.run.dir, self.run.state)


def new_owner(pid):
    start = proc_start_time(pid)
    if start is None:
        raise HarnessError(f"--watch-pid {pid}: no such process")
    return {"pid": pid, "start": start, "boot_id": boot_id(), "machine": socket.gethostname()}


def spawn_watchdog(run):
    out = open(run.dir / "logs" / "watchdog.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, __file__, "watchdog", "--dir", str(run.dir)],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        env=dict(run.env, PYTHONPATH=""), cwd=run.cwd, start_new_session=True,
    )
    out.close()
    with run.lock:
        run.state["watchdog"] = {"pid": proc.pid, "start": proc_start_time(proc.pid)}
        write_state(run.dir, run.state)


def compute_services_up(run):
    _, body = nova(run.state, "GET", "/os-services?binary=nova-compute")
    up = {s["host"] for s in body["services"] if s["state"] == "up"}
    return set(run.state["hosts"]) <= up


def hypervisors_up(run):
    _, body = nova(run.state, "GET", "/os-hypervisors/detail")
    up = {h["hypervisor_hostname"] for h in body["hypervisors"] if h["state"] == "up"}
    missing = set(run.state["hosts"]) - up
    if missing:
        raise RuntimeError(f"not listed (or not up) yet: {sorted(missing)}")
    return True


def conductor_registered(run):
    rows = sql(
        "SELECT COUNT(*) FROM services WHERE `binary` = 'nova-conductor' AND deleted = 0",
        database=run.state["databases"]["cell1"],
    )
    return int(rows[0][0]) > 0


def create_image(run):
    base = run.state["image_url"]
    status, image = http("POST", f"{base}/v2/images", {
        "name": IMAGE_NAME, "disk_format": "raw", "container_format": "bare",
        # The unauthenticated context is not admin for policy: "public" would be a 403.
        "visibility": "community",
    }, timeout=30)
    if status != 201:
        raise HarnessError(f"glance POST /v2/images -> {status}: {image}", ["glance"])
    status, out = http("PUT", f"{base}/v2/images/{image['id']}/file", data=b"\0" * 1024,
                       headers={"Content-Type": "application/octet-stream"}, timeout=30)
    if status != 204:
        raise HarnessError(f"glance PUT image file -> {status}: {out}", ["glance"])
    _, image = http("GET", f"{base}/v2/images/{image['id']}", timeout=30)
    if image.get("status") != "active":
        raise HarnessError(f"glance image not active: {image}", ["glance"])
    return image["id"]


def create_flavor(run):
    nova(run.state, "POST", "/flavors", {"flavor": {
        "name": FLAVOR_ID, "id": FLAVOR_ID, "ram": 64, "vcpus": 1, "disk": 1}})
    return FLAVOR_ID


def discover_hosts(run):
    """What the scheduler's periodic task already does: the fallback if it is slow."""
    run_tool(run, "nova-manage cell_v2 discover_hosts",
             [BIN / "nova-manage", "--config-file", run.dir / "conf" / "nova.conf",
              "cell_v2", "discover_hosts", "--verbose"])


def public_state(state):
    return {
        "compute_url": state["compute_url"],
        "image_url": state["image_url"],
        "placement_url": state["placement_url"],
        "neutron_url": state["neutron_url"],
        "admin_token": ADMIN_TOKEN,
        "hosts": state["hosts"],
        "image_id": state.get("image_id"),
        "flavor_id": state.get("flavor_id"),
        "dir": state["dir"],
        "tag": state["tag"],
        "pids": {name: p["pid"] for name, p in state["procs"].items()},
        "watchdog_pid": state["watchdog"]["pid"] if state.get("watchdog") else None,
        "databases": state["databases"],
        "vhost": state["vhost"],
        "timings": state.get("timings", {}),
    }


def cmd_start(args):
    t0 = time.monotonic()
    dir_ = Path(args.dir).resolve()
    dir_.mkdir(parents=True, exist_ok=True)
    glance_venv = Path(args.glance_venv).resolve()
    if not (glance_venv / "bin" / "glance-manage").exists():
        raise HarnessError(f"--glance-venv {glance_venv}: no bin/glance-manage there")
    if args.computes < 1:
        raise HarnessError("--computes must be at least 1")
    for names in (("mysql", "mariadb"), ("mysqldump", "mariadb-dump"), ("rabbitmqctl",)):
        tool(*names)
    owner = new_owner(args.watch_pid or os.getppid())
    registry_init()
    reaped = reap_dead_runs(skip_dir=dir_)
    earlier = read_state(dir_)
    if earlier and "tag" in earlier and not earlier.get("stopped"):
        log(f"stopping the earlier run {earlier['tag']} of {dir_}")
        cleanup_run(earlier["tag"], dir_)
    for sub in ("conf", "state", "logs", *(p.name for p in dir_.glob("cwd-*"))):
        shutil.rmtree(dir_ / sub, ignore_errors=True)
    (dir_ / "logs").mkdir()
    (dir_ / STATE_FILE).unlink(missing_ok=True)
    t_reap = time.monotonic()

    tag = registry_add(owner, str(dir_))
    socks = {name: bind_socket() for name in ("neutron", "placement", "glance", "api")}
    ports = {name: s.getsockname()[1] for name, s in socks.items()}
    state = {
        "tag": tag,
        "dir": str(dir_),
        "owner": owner,
        "driver": {"pid": os.getpid(), "start": proc_start_time(os.getpid())},
        "glance_venv": str(glance_venv),
        "databases": db_names(tag),
        "vhost": vhost_name(tag),
        "hosts": host_names(args.computes),
        "ports": ports,
        "compute_url": f"http://127.0.0.1:{ports['api']}/v2.1",
        "image_url": f"http://127.0.0.1:{ports['glance']}",
        "placement_url": f"http://127.0.0.1:{ports['placement']}",
        "neutron_url": f"http://127.0.0.1:{ports['neutron']}",
        "procs": {},
    }
    run = Run(dir_, state, glance_venv)
    run.save()
    log(f"run {tag} in {dir_}: {args.computes} computes, ports {ports}")
    with state_lock(dir_):
        try:
            spawn_watchdog(run)
            timings = start_services(run, socks, args.cache_dir, t0)
        except BaseException as e:
            for s in socks.values():
                s.close()
            if isinstance(e, HarnessError):
                log(f"ERROR: {e}")
                report_logs(dir_, e.logs)
            else:
                log(f"ERROR: {type(e).__name__}: {e}")
            log(f"cleaning up run {tag}")
            cleanup_run(tag, dir_, exclude={os.getpid()})
            sys.exit(1)
        timings["reap_s"] = round(t_reap - t0, 2)
        timings["reaped_runs"] = reaped
        state["timings"] = timings
        state.pop("driver")
        run.save()
    log(
        f"Nova up at {state['compute_url']} with {len(state['hosts'])} computes: "
        f"setup {timings['setup_s']:.1f} s ({timings['databases']}), "
        f"start {timings['start_s']:.1f} s, total {timings['total_s']:.1f} s"
    )
    print(json.dumps(public_state(state)), flush=True)


def start_services(run, socks, cache_dir, t0):
    steps = {}

    def timed(name, fn, *a):
        t = time.monotonic()
        result = fn(*a)
        steps[name] = round(time.monotonic() - t, 2)
        return result

    write_configs(run.dir, run.state)
    run.start_neutron(socks.pop("neutron"))
    if os.environ.get("NOVA_HARNESS_ZYGOTE", "1") != "0":
        run.zygote = Zygote(run)  # imports while the databases load
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        vhost = pool.submit(timed, "vhost", create_vhost, run.state["vhost"])
        how = timed("databases", prepare_databases, run, cache_dir)
        vhost.result()
    t_setup = time.monotonic()

    # Everything that needs only its database and the vhost starts at once; what is needed
    # only at the end (the scheduler's host discovery, the API, glance) runs niced until then,
    # so that the conductor and the computes get the CPU first. As root only: others cannot
    # take the niceness back.
    nice = os.geteuid() == 0
    late = ["nova-scheduler", "nova-api", "glance"] if nice else []
    run.start_placement(socks.pop("placement"))
    run.start_api("nova-api", socks.pop("api"), ["api-paste.ini", "nova.conf"], nice=nice)
    run.start_glance(socks.pop("glance"), nice=nice)
    # (The first zygote fork waits for its imports, so the gunicorns go first.)
    run.start_nova_service("nova-conductor", "nova-conductor")
    run.start_nova_service("nova-scheduler", "nova-scheduler", nice=nice)
    # ...the computes once the conductor has registered (it consumes RPC a moment later): a
    # compute's first conductor ping sent before that is lost and costs it 10 s. They also need
    # placement, or their first resource report fails and waits for the next periodic run.
    timed("conductor_registered", run.wait, "nova-conductor in the services table",
          lambda: conductor_registered(run), ["nova-conductor"])
    timed("placement_up", run.wait, "placement-api answering",
          run.answers(run.state["placement_url"] + "/"), ["placement"])
    t_computes = time.monotonic()
    for host in run.state["hosts"]:
        run.start_nova_service(f"nova-{host}", "nova-compute", run.dir / "conf" / f"{host}.conf")
    if run.zygote is not None:
        run.zygote.close()
    for name in late:
        run.unnice(name)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        def image():
            run.wait("glance-api answering", run.answers(run.state["image_url"] + "/versions"),
                     ["glance"])
            return create_image(run)
        image_id = pool.submit(timed, "image", image)
        timed("nova_api_up", run.wait_api, "nova-api", run.state["compute_url"] + "/")
        run.state["flavor_id"] = timed("flavor", create_flavor, run)
        run.state["image_id"] = image_id.result()
    computes = [f"nova-{h}" for h in run.state["hosts"]]
    timed("computes_up", run.wait, "every nova-compute up in os-services",
          lambda: compute_services_up(run), computes + ["nova-api", "nova-conductor"])
    try:
        # The scheduler maps new nodes every 2 s ([scheduler] discover_hosts_in_cells_interval).
        timed("hypervisors_up", run.wait, "every hypervisor listed and up",
              lambda: hypervisors_up(run), computes + ["nova-api", "nova-scheduler"], 30)
    except HarnessError as e:
        log(f"{e}; running nova-manage cell_v2 discover_hosts")
        discover_hosts(run)
        timed("hypervisors_up", run.wait, "every hypervisor listed and up",
              lambda: hypervisors_up(run), computes + ["nova-api", "nova-scheduler"],
              HYPERVISORS_TIMEOUT)
    t_end = time.monotonic()
    steps["computes_start_to_hypervisors_s"] = round(t_end - t_computes, 2)
    return {
        "databases": how,
        "setup_s": round(t_setup - t0, 2),
        "start_s": round(t_end - t_setup, 2),
        "total_s": round(t_end - t0, 2),
        "steps": steps,
    }


def cmd_stop(args):
    dir_ = Path(args.dir).resolve()
    state = read_state(dir_)
    if not state or "tag" not in state:
        log(f"no run in {dir_}")
        return
    cleanup_run(state["tag"], dir_)
    log(f"stopped run {state['tag']} of {dir_}")


def cmd_stop_api(args):
    dir_ = Path(args.dir).resolve()
    with state_lock(dir_):
        state = load_state(dir_)
        entry = state["procs"].get("nova-api")
        kill_entry(entry)
        deadline = time.monotonic() + 30
        port = state["ports"]["api"]
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                if not is_ours(entry):
                    break
            if time.monotonic() > deadline:
                raise HarnessError(f"nova-api still answers on port {port} 30 s after SIGKILL")
            time.sleep(0.05)
        state["procs"].pop("nova-api", None)
        state["api_stopped"] = True
        write_state(dir_, state)
    log(f"nova-api of run {state['tag']} stopped (port {port} refuses connections)")


def cmd_start_api(args):
    t0 = time.monotonic()
    dir_ = Path(args.dir).resolve()
    with state_lock(dir_):
        state = load_state(dir_)
        run = Run(dir_, state, state["glance_venv"])
        if run.alive("nova-api"):
            log("nova-api already runs")
        else:
            run.start_api("nova-api", bind_socket(state["ports"]["api"]),
                          ["api-paste.ini", "nova.conf"])
            state["api_stopped"] = False
            run.save()
            run.wait_api("nova-api", state["compute_url"] + "/")
    log(f"nova-api of run {state['tag']} answers at {state['compute_url']} "
        f"after {time.monotonic() - t0:.1f} s")
    print(json.dumps({"compute_url": state["compute_url"],
                      "pid": state["procs"]["nova-api"]["pid"]}), flush=True)


def cmd_start_keystone_api(args):
    t0 = time.monotonic()
    dir_ = Path(args.dir).resolve()
    name = "nova-api-keystone"
    with state_lock(dir_):
        state = load_state(dir_)
        run = Run(dir_, state, state["glance_venv"])
        kill_entry(state["procs"].get(name))  # a second call replaces the first
        render(HERE / "nova-keystone.conf", dir_ / "conf" / "nova-keystone.conf", {
            "AUTH_URL": args.auth_url, "USERNAME": args.username, "PASSWORD": args.password,
            "PROJECT_NAME": args.project_name, "USER_DOMAIN_NAME": args.user_domain_name,
            "PROJECT_DOMAIN_NAME": args.project_domain_name,
        })
        sock = bind_socket()
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}/v2.1"
        run.start_api(name, sock, ["api-paste-keystone.ini", "nova.conf", "nova-keystone.conf"])
        state["ports"]["keystone_api"] = port
        state["keystone_compute_url"] = url
        run.save()
        # The version document needs no token; an API call without one must be refused by
        # authtoken (401), which proves the Keystone pipeline is the one that runs.
        run.wait(f"{name} answering {url}/", run.answers(url + "/"), [name])
        status, body = http("GET", url + "/os-hypervisors", timeout=30)
        if status != 401:
            raise HarnessError(f"{name}: GET /os-hypervisors without a token -> {status}: {body}",
                               [name])
    log(f"{name} answers at {url} after {time.monotonic() - t0:.1f} s")
    print(json.dumps({"compute_url": url, "pid": state["procs"][name]["pid"]}), flush=True)


def cmd_watchdog(args):
    dir_ = Path(args.dir).resolve()
    state = read_state(dir_)
    if not state:
        return
    owner, tag = state["owner"], state["tag"]
    log(f"watching pid {owner['pid']} for run {tag}")
    while owner_alive(owner):
        time.sleep(0.5)
        current = read_state(dir_)
        if current is None or current.get("tag") != tag or current.get("stopped"):
            log("the run was stopped")
            return
    log(f"owner {owner['pid']} is gone: cleaning up run {tag}")
    cleanup_run(tag, dir_, exclude={os.getpid()})
    # A process forked by a dying driver can exec a moment later: look once more.
    time.sleep(1)
    kill_tagged(tag, exclude={os.getpid()})
    log("done")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="set up and start a Nova")
    p.add_argument("--dir", required=True)
    p.add_argument("--glance-venv", required=True, help="the virtualenv with glance")
    p.add_argument("--computes", type=int, default=2)
    p.add_argument("--watch-pid", type=int, help="clean up when this process is gone "
                   "(default: the caller)")
    p.add_argument("--cache-dir", help="keep database templates here and load them")
    p.set_defaults(func=cmd_start)
    for name, func, help_ in (
        ("stop", cmd_stop, "kill the run's processes, drop its databases and vhost"),
        ("stop-api", cmd_stop_api, "stop the noauth nova-api"),
        ("start-api", cmd_start_api, "start the noauth nova-api again, on its port"),
        ("watchdog", cmd_watchdog, "clean up once the owner is gone (started by start)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dir", required=True)
        p.set_defaults(func=func)
    p = sub.add_parser("start-keystone-api", help="a second nova-api behind Keystone")
    p.add_argument("--dir", required=True)
    p.add_argument("--auth-url", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--project-name", required=True)
    p.add_argument("--user-domain-name", default="Default")
    p.add_argument("--project-domain-name", default="Default")
    p.set_defaults(func=cmd_start_keystone_api)
    args = parser.parse_args()
    try:
        args.func(args)
    except HarnessError as e:
        log(f"ERROR: {e}")
        if getattr(args, "dir", None):
            report_logs(args.dir, e.logs)
        sys.exit(1)


if __name__ == "__main__":
    main()
