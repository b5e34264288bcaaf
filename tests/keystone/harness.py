"""Runs a real, seeded OpenStack Keystone (30.0.0 under gunicorn) for blazar-server's tests.

Run it with the Python of a virtualenv that holds keystone==30.0.0 and gunicorn==27.0.1; it installs
nothing. Subcommands:

  start --dir DIR --port PORT [--token-expiration SECONDS] [--cache-dir CACHE] [--watch-pid PID]
      Sets Keystone up in DIR (config, fernet and credential keys, SQLite database, bootstrap),
      starts it in the background on 127.0.0.1:PORT, seeds the test projects and users through the
      REST API, and prints ONE line of JSON on stdout (auth_url, admin_token, pid, projects,
      users, roles, passwords). Progress and timings go to stderr. Calling it again on the same
      DIR stops the earlier Keystone of that DIR and reuses its database.
  set-endpoint --dir DIR --url URL [--type TYPE --name NAME]
      Registers (or moves) the catalog service of type TYPE (default `reservation`, name
      `blazar`) with public, internal and admin endpoints at URL, so that clients find our server
      (or our server finds Nova, with --type compute) in the catalog.
  stop --dir DIR
      Kills the Keystone that `start` left running in DIR.

Only the standard library is used here, so that set-endpoint and stop start fast; the slow
Keystone code runs in keystone-manage and in the gunicorn worker.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ADMIN_PASSWORD = "admin-secret"
REGION = "RegionOne"
DOMAIN = "default"
# name -> (project, role). `blazar` is the service account our server validates tokens with.
USERS = {
    "blazar": ("service", "admin"),
    "alice": ("alpha", "member"),
    "bob": ("beta", "member"),
    "carol": ("alpha", "admin"),
    "dave": ("alpha", "reader"),
}
PROJECTS = ["service", "alpha", "beta"]
RESERVATION_SERVICE = {"type": "reservation", "name": "blazar"}
INTERFACES = ["public", "internal", "admin"]
# Bootstrap inside a cached template uses this URL; start() moves the identity endpoints to the
# real port afterwards (the template is shared by runs on different ports).
TEMPLATE_URL = "http://127.0.0.1:5000/v3"
# Files of DIR that make up Keystone's persistent state (what a template holds).
STATE = ["keystone.db", "fernet-keys", "credential-keys"]
SETUP_DONE = ".setup-done"
STATE_FILE = "harness-state.json"
OWNER_FILE = "harness-owner.json"
PID_FILE = "gunicorn.pid"
START_TIMEOUT = 120.0
HTTP_TIMEOUT = 10.0

BIN = Path(sys.executable).parent


def log(msg):
    print(f"[keystone-harness] {msg}", file=sys.stderr, flush=True)


def fail(msg, dir_=None):
    log(f"ERROR: {msg}")
    if dir_ is not None:
        for name in ["setup.log", "gunicorn.log", "keystone.log"]:
            path = Path(dir_) / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-40:]
                log(f"--- last lines of {path} ---")
                print("\n".join(tail), file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------- processes


def proc_start_time(pid):
    """The kernel's start time of a live process (None if it is gone), so that a recycled pid is
    not taken for the process we meant."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Fields 3 (state) and 22 (start time); the command name (field 2) may hold spaces, so count
    # from the last ')'. A zombie is gone for our purposes: init may take a while to reap it.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def kill_group(pid):
    """Kills gunicorn's whole process group (master and worker): gunicorn runs in its own session,
    so its pid is the group id. SIGKILL because nothing in a test Keystone needs a graceful exit."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    for _ in range(50):
        if proc_start_time(pid) is None:
            return
        time.sleep(0.05)


def stop_dir(dir_):
    pidfile = Path(dir_) / PID_FILE
    if not pidfile.exists():
        return False
    try:
        pid = int(pidfile.read_text().strip())
    except ValueError:
        pidfile.unlink(missing_ok=True)
        return False
    # Only kill what this harness started: a gunicorn running in this directory (the pid may have
    # been recycled since; the working directory is checked rather than the command line, which
    # gunicorn rewrites when setproctitle is installed).
    killed = False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        cwd, cmdline = "", ""
    if cwd == str(Path(dir_).resolve()) and "gunicorn" in cmdline:
        kill_group(pid)
        killed = True
    pidfile.unlink(missing_ok=True)
    return killed


def reap_orphans(dir_):
    """Stops the Keystones of sibling run directories whose owning (test) process is gone: the
    backstop for an owner that died without cleaning up (the watchdog in gunicorn is the first
    line)."""
    parent = Path(dir_).resolve().parent
    if not parent.is_dir():
        return
    for sibling in parent.iterdir():
        owner = sibling / OWNER_FILE
        if sibling == Path(dir_).resolve() or not owner.exists():
            continue
        try:
            info = json.loads(owner.read_text())
        except (OSError, ValueError):
            continue
        if proc_start_time(info["pid"]) == info["start_time"]:
            continue  # its test process still runs
        if stop_dir(sibling):
            log(f"stopped an orphaned Keystone in {sibling}")
        shutil.rmtree(sibling, ignore_errors=True)


# ---------------------------------------------------------------- setup


def write_config(dir_, token_expiration):
    d = Path(dir_).resolve()
    (d / "keystone.conf").write_text(
        f"""# Written by tests/keystone/harness.py: a test Keystone, fast rather than hardened.
[DEFAULT]
log_file = {d}/keystone.log
debug = false

[database]
connection = sqlite:///{d}/keystone.db

[token]
provider = fernet
expiration = {token_expiration}

[fernet_tokens]
key_repository = {d}/fernet-keys

[credential]
key_repository = {d}/credential-keys

[identity]
# bcrypt's default cost makes every login ~250 ms; 4 is the minimum.
password_hash_rounds = 4

[cache]
# Without a cache one token validation runs ~400 SQL queries (~0.7 s); one gunicorn worker keeps
# this in-process cache coherent with revocations.
enabled = true
backend = dogpile.cache.memory
"""
    )
    # gunicorn imports this instead of Keystone's app directly: Keystone reads sys.argv as its
    # own options, and gunicorn's flags there make the worker die at import and respawn forever.
    (d / "wsgi_app.py").write_text(
        """# Written by tests/keystone/harness.py: Keystone's WSGI app for gunicorn, made safe for
# SQLite and threads.
import sys
import threading

sys.argv = sys.argv[:1]

from keystone.server.wsgi import initialize_public_application  # noqa: E402

_keystone = initialize_public_application()

# Every password login writes (user.last_active_at) in a transaction that reads first; two at
# once on SQLite deadlock on the lock upgrade and one fails at once with "database is locked"
# (a 500). So requests that may write run one at a time; GETs (token validation) stay parallel.
_writes = threading.Lock()


def application(environ, start_response):
    if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
        return _keystone(environ, start_response)
    with _writes:
        # Consumed inside the lock: the response body is produced while it is held.
        return list(_keystone(environ, start_response))
"""
    )
    # The watchdog: the master kills its own process group when the process that owns this
    # Keystone (the test binary) is gone, even if it died by SIGKILL or a crash.
    (d / "gunicorn_conf.py").write_text(
        """# Written by tests/keystone/harness.py: gunicorn hooks for the test Keystone.
import os
import signal
import socket
import threading
import time


def _start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # A zombie owner is gone: init may take a while to reap it.
    return None if fields[0] in ("Z", "X") else int(fields[19])


def when_ready(server):
    watch = os.environ.get("KEYSTONE_HARNESS_WATCH", "")
    if not watch:
        return
    pid, start = (int(x) for x in watch.split(":"))

    def watchdog():
        while _start_time(pid) == start:
            time.sleep(0.5)
        server.log.info("owner process %s is gone: stopping", pid)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    # Started in the master only: a fork copies just the forking thread, so workers lack it.
    threading.Thread(target=watchdog, name="owner-watchdog", daemon=True).start()
"""
    )


def manage(dir_, *args):
    conf = Path(dir_).resolve() / "keystone.conf"
    with open(Path(dir_) / "setup.log", "a") as out:
        out.write(f"$ keystone-manage {' '.join(args)}\n")
        out.flush()
        rc = subprocess.run(
            [str(BIN / "keystone-manage"), "--config-file", str(conf), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        ).returncode
    if rc != 0:
        fail(f"keystone-manage {args[0]} failed ({rc})", dir_)


def setup_state(dir_, public_url):
    """The expensive part: keys, schema, bootstrap (~11 s of keystone-manage start-ups)."""
    user = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
    manage(dir_, "fernet_setup", *user)
    manage(dir_, "credential_setup", *user)
    manage(dir_, "db_sync")
    # Also creates the roles admin > manager > member > reader (implied) and RegionOne.
    manage(
        dir_,
        "bootstrap",
        "--bootstrap-password", ADMIN_PASSWORD,
        "--bootstrap-username", "admin",
        "--bootstrap-project-name", "admin",
        "--bootstrap-role-name", "admin",
        "--bootstrap-region-id", REGION,
        "--bootstrap-admin-url", public_url,
        "--bootstrap-internal-url", public_url,
        "--bootstrap-public-url", public_url,
    )
    (Path(dir_) / SETUP_DONE).write_text("")


def template_key():
    """Templates are keyed on this file and the installed Keystone: a change to either rebuilds."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(sys.version.encode())
    for dist in sorted(Path(BIN.parent).glob("lib/python*/site-packages/keystone-*.dist-info")):
        h.update(dist.name.encode())
    return h.hexdigest()[:16]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_state(src, dst):
    for name in STATE:
        s, d = Path(src) / name, Path(dst) / name
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        else:
            shutil.copy2(s, d)


def prepare(dir_, port, cache_dir):
    """Makes DIR's state ready: kept from an earlier start, copied from a cached template, or
    built from scratch."""
    d = Path(dir_)
    if (d / SETUP_DONE).exists():
        return "reused"
    for name in STATE:
        path = d / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if cache_dir is None:
        setup_state(dir_, f"http://127.0.0.1:{port}/v3")
        return "built"
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    template = cache / f"template-{template_key()}"
    # One builder at a time across processes; the others wait and then copy.
    with open(cache / f"template-{template_key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        how = "copied"
        if not (template / SETUP_DONE).exists():
            # Builders that died left their half-built directories; we hold the lock, so any
            # other building-* is dead.
            for stale in cache.glob("building-*"):
                shutil.rmtree(stale, ignore_errors=True)
            # Templates of earlier versions of this file are dead weight.
            for old in cache.glob("template-*"):
                if old.is_dir() and old != template:
                    shutil.rmtree(old, ignore_errors=True)
                    Path(f"{old}.lock").unlink(missing_ok=True)
            building = cache / f"building-{os.getpid()}"
            building.mkdir()
            write_config(building, 3600)
            setup_state(building, TEMPLATE_URL)
            # Seeding through the API costs ~1.2 s on an empty database and ~0.4 s when all is
            # there, so the template holds the seeded state too (start seeds again, idempotently).
            port = free_port()
            proc = serve(building, port, os.getpid())
            admin_seed(proc, f"http://127.0.0.1:{port}/v3", building)
            kill_group(proc.pid)
            (building / PID_FILE).unlink(missing_ok=True)
            (building / OWNER_FILE).unlink(missing_ok=True)
            shutil.rmtree(template, ignore_errors=True)
            building.rename(template)
            how = "built template, copied"
        copy_state(template, d)
    (d / SETUP_DONE).write_text("")
    return how


# ---------------------------------------------------------------- REST


class Api:
    def __init__(self, base, token=None):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, headers=None, ok=(200, 201, 204)):
        req = urllib.request.Request(self.base + path, method=method)
        if self.token:
            req.add_header("X-Auth-Token", self.token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, data, timeout=HTTP_TIMEOUT) as resp:
                text = resp.read().decode()
                return resp.status, dict(resp.headers), json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            if e.code in ok:
                return e.code, dict(e.headers), json.loads(text) if text else None
            raise RuntimeError(f"{method} {path} -> {e.code}: {text}") from None

    def password_token(self, user, password, project):
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": DOMAIN}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": DOMAIN}}},
            }
        }
        _, headers, _ = self.call("POST", "/auth/tokens", body)
        return headers["X-Subject-Token"]

    def find(self, collection, **filters):
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        _, _, body = self.call("GET", f"/{collection}?{query}")
        return body[collection]

    def get_or_create(self, collection, singular, entity, **filters):
        found = self.find(collection, **filters)
        if found:
            return found[0]["id"]
        _, _, body = self.call("POST", f"/{collection}", {singular: entity})
        return body[singular]["id"]


def wait_until_up(proc, auth_url, dir_):
    """Polls GET /v3 with a client timeout: a worker that crashes at import leaves the port open
    and silent, so a plain connect would wait forever."""
    deadline = time.monotonic() + START_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"gunicorn exited with {proc.returncode} before Keystone answered", dir_)
        try:
            with urllib.request.urlopen(auth_url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - any failure just means "not yet"
            last = e
        time.sleep(0.1)
    kill_group(proc.pid)
    fail(f"Keystone did not answer {auth_url} within {START_TIMEOUT:.0f} s (last: {last})", dir_)


def seed(api):
    roles = {r["name"]: r["id"] for r in api.find("roles")}
    projects = {p["name"]: p["id"] for p in api.find("projects", domain_id=DOMAIN)}
    for name in PROJECTS:
        projects[name] = api.get_or_create(
            "projects", "project",
            {"name": name, "domain_id": DOMAIN, "description": f"test project {name}"},
            name=name, domain_id=DOMAIN,
        )
    users = {u["name"]: u["id"] for u in api.find("users", domain_id=DOMAIN)}
    for name, (project, role) in USERS.items():
        users[name] = api.get_or_create(
            "users", "user",
            {
                "name": name,
                "domain_id": DOMAIN,
                "password": f"{name}-secret",
                "default_project_id": projects[project],
            },
            name=name, domain_id=DOMAIN,
        )
        # PUT is idempotent: no need to look first.
        api.call("PUT", f"/projects/{projects[project]}/users/{users[name]}/roles/{roles[role]}")
    return projects, users, roles


def fix_identity_endpoints(api, auth_url):
    services = api.find("services", type="identity")
    for service in services:
        for ep in api.find("endpoints", service_id=service["id"]):
            if ep["url"] != auth_url:
                api.call("PATCH", f"/endpoints/{ep['id']}", {"endpoint": {"url": auth_url}})


def serve(dir_, port, watch_pid):
    """Starts gunicorn in the background on DIR's Keystone and waits until it answers. With a
    watch_pid, the gunicorn watchdog and later starts' reaper stop it once that process is gone."""
    env = dict(os.environ, OS_KEYSTONE_CONFIG_DIR=str(dir_))
    env.pop("KEYSTONE_HARNESS_WATCH", None)
    if watch_pid:
        start = proc_start_time(watch_pid)
        if start is None:
            fail(f"--watch-pid {watch_pid}: no such process")
        env["KEYSTONE_HARNESS_WATCH"] = f"{watch_pid}:{start}"
        (dir_ / OWNER_FILE).write_text(json.dumps({"pid": watch_pid, "start_time": start}))
    else:
        (dir_ / OWNER_FILE).unlink(missing_ok=True)
    gunicorn_log = open(dir_ / "gunicorn.log", "a")
    # stdout/stderr go to a file, never to ours: whoever runs us waits for our pipes to close,
    # and a background gunicorn holding them would make that wait last until Keystone exits.
    proc = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--config", str(dir_ / "gunicorn_conf.py"),
            "--bind", f"127.0.0.1:{port}",
            # One process: the memory cache must see revocations. No control socket: its default
            # path is shared by every gunicorn of the user and collides.
            "--workers", "1",
            "--threads", "4",
            "--no-control-socket",
            # The first requests on a busy 2-core machine can be slow; gunicorn's 30 s default
            # would kill the worker mid-start.
            "--timeout", "120",
            "--graceful-timeout", "5",
            "--chdir", str(dir_),
            "--pid", str(dir_ / PID_FILE),
            "--error-logfile", str(dir_ / "gunicorn.log"),
            "--capture-output",
            "wsgi_app:application",
        ],
        cwd=dir_,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=gunicorn_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, killed as one by stop
    )
    gunicorn_log.close()
    # gunicorn writes its pidfile a moment after starting; write it now so that stop works even
    # if start fails below (the pid is the same: gunicorn does not daemonize here).
    (dir_ / PID_FILE).write_text(f"{proc.pid}\n")
    wait_until_up(proc, f"http://127.0.0.1:{port}/v3", dir_)
    return proc


def admin_seed(proc, auth_url, dir_):
    """Points the identity endpoints at auth_url and seeds (idempotent); returns the admin API
    and the ids. Stops Keystone and fails loudly on any error."""
    try:
        admin = Api(auth_url)
        admin.token = admin.password_token("admin", ADMIN_PASSWORD, "admin")
        fix_identity_endpoints(admin, auth_url)
        return (admin, *seed(admin))
    except Exception as e:  # noqa: BLE001 - reported with the logs, then Keystone is stopped
        kill_group(proc.pid)
        fail(f"seeding failed: {e}", dir_)


def cmd_start(args):
    t0 = time.monotonic()
    dir_ = Path(args.dir).resolve()
    dir_.mkdir(parents=True, exist_ok=True)
    reap_orphans(dir_)
    if stop_dir(dir_):
        log(f"stopped the earlier Keystone of {dir_}")
    auth_url = f"http://127.0.0.1:{args.port}/v3"
    write_config(dir_, args.token_expiration)
    how = prepare(dir_, args.port, args.cache_dir)
    t_setup = time.monotonic()
    proc = serve(dir_, args.port, args.watch_pid)
    t_up = time.monotonic()
    admin, projects, users, roles = admin_seed(proc, auth_url, dir_)
    t_seed = time.monotonic()

    state = {
        "auth_url": auth_url,
        "port": args.port,
        "dir": str(dir_),
        "pid": proc.pid,
        "admin_user": "admin",
        "admin_password": ADMIN_PASSWORD,
        "admin_project": "admin",
        "admin_token": admin.token,
        "region": REGION,
        "domain": DOMAIN,
        "token_expiration": args.token_expiration,
        "projects": projects,
        "users": users,
        "roles": roles,
        "passwords": {name: f"{name}-secret" for name in USERS} | {"admin": ADMIN_PASSWORD},
    }
    (dir_ / STATE_FILE).write_text(json.dumps(state, indent=2))
    log(
        f"Keystone up at {auth_url} (pid {proc.pid}); state {how} in {t_setup - t0:.1f} s, "
        f"serving after {t_up - t_setup:.1f} s, seeded in {t_seed - t_up:.1f} s, "
        f"total {t_seed - t0:.1f} s"
    )
    print(json.dumps(state), flush=True)


def load_state(dir_):
    path = Path(dir_) / STATE_FILE
    if not path.exists():
        fail(f"no {STATE_FILE} in {dir_}: run `start` first")
    return json.loads(path.read_text())


def cmd_set_endpoint(args):
    state = load_state(args.dir)
    api = Api(state["auth_url"])
    api.token = api.password_token("admin", ADMIN_PASSWORD, "admin")
    default_name = RESERVATION_SERVICE["name"] if args.type == RESERVATION_SERVICE["type"] else args.type
    service = {"type": args.type, "name": args.name or default_name}
    service_id = api.get_or_create(
        "services", "service", dict(service, enabled=True), type=service["type"],
    )
    existing = {ep["interface"]: ep for ep in api.find("endpoints", service_id=service_id)}
    for interface in INTERFACES:
        ep = existing.get(interface)
        if ep is None:
            api.call(
                "POST", "/endpoints",
                {"endpoint": {"service_id": service_id, "interface": interface,
                              "url": args.url, "region_id": REGION, "enabled": True}},
            )
        elif ep["url"] != args.url:
            api.call("PATCH", f"/endpoints/{ep['id']}", {"endpoint": {"url": args.url}})
    print(json.dumps({"service_id": service_id, "url": args.url}), flush=True)


def cmd_stop(args):
    if stop_dir(args.dir):
        log(f"stopped the Keystone of {args.dir}")
    else:
        log(f"no running Keystone in {args.dir}")
    (Path(args.dir) / OWNER_FILE).unlink(missing_ok=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="set up, start and seed a Keystone")
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token-expiration", type=int, default=3600, metavar="SECONDS")
    p.add_argument("--cache-dir", help="keep a bootstrapped template here and copy it")
    p.add_argument("--watch-pid", type=int, help="stop Keystone when this process is gone")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("set-endpoint", help="point a catalog entry (`reservation` by default) at URL")
    p.add_argument("--dir", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--type", default=RESERVATION_SERVICE["type"], help="service type, e.g. compute")
    p.add_argument("--name", default=None, help="service name (default: blazar for reservation)")
    p.set_defaults(func=cmd_set_endpoint)
    p = sub.add_parser("stop", help="kill the Keystone started in DIR")
    p.add_argument("--dir", required=True)
    p.set_defaults(func=cmd_stop)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
