#!/usr/bin/env python3
"""Drives the real `blazar` and `openstack reservation` CLIs against a running blazar-server in
noauth mode and checks the values they print: hosts, properties, leases, allocations, errors.

Usage: cli_test.py [--bin DIR] [--blazar URL] [--openstack URL [--full-openstack]]
  --bin        where the `blazar` and `openstack` executables are (default: next to this Python)
  --blazar     endpoint (…/v1) for the full pass through the legacy `blazar` commands
  --openstack  endpoint (…/v1) for the pass through `openstack reservation …`: the key commands
               (every command, each request shape), or every step with --full-openstack
Each pass wants a server of its own (its own hosts), but only looks at names with its own prefix.
Prints one PASS/FAIL line per check and a final count; exits 1 on any failure.
Standard library only, so it runs with the virtualenv's Python that holds the clients.
"""

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

LEASE_FMT = "%Y-%m-%dT%H:%M:%S.%f"  # what the server prints and the client parses back
API_FMT = "%Y-%m-%d %H:%M"  # what the client sends


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.notes = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f"\n     {detail}" if detail else ""), flush=True)
        return ok

    def eq(self, name, got, want):
        return self.check(name, got == want, f"got {got!r}, want {want!r}")


CHECKS = Checks()


# Legacy command -> `openstack` words. `host-update` is `host set`, `lease-update` is `lease set`.
OSC_NAMES = {
    "host-create": ["host", "create"],
    "host-list": ["host", "list"],
    "host-show": ["host", "show"],
    "host-update": ["host", "set"],
    "host-unset": ["host", "unset"],
    "host-delete": ["host", "delete"],
    "host-property-list": ["host", "property", "list"],
    "host-property-show": ["host", "property", "show"],
    "host-property-set": ["host", "property", "set"],
    "lease-create": ["lease", "create"],
    "lease-list": ["lease", "list"],
    "lease-show": ["lease", "show"],
    "lease-update": ["lease", "set"],
    "lease-delete": ["lease", "delete"],
    "allocation-list": ["allocation", "list"],
    "allocation-show": ["allocation", "show"],
}


class Cli:
    """One of the two front ends, addressed with the legacy command names."""

    def __init__(self, kind, bindir, endpoint, full):
        self.kind = kind
        self.full = full  # every step, or only the key commands (one of each kind)
        self.commands = 0
        self.endpoint = endpoint
        self.exe = os.path.join(bindir, kind)
        # A developer's OS_* variables (OS_CLOUD, OS_TOKEN, ...) must not steer the clients.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}

    def argv(self, command, args):
        base = [self.exe, "--os-auth-type", "none", "--os-endpoint", self.endpoint]
        if self.kind == "blazar":
            return base + [command] + list(args)
        return base + ["reservation"] + OSC_NAMES[command] + list(args)

    def run(self, command, *args):
        argv = self.argv(command, args)
        started = time.monotonic()
        self.commands += 1
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=self.env, timeout=120
        )
        proc.shown = " ".join(argv[5:])
        proc.seconds = time.monotonic() - started
        return proc

    def ok(self, command, *args):
        """Runs a command that must succeed; returns its stdout, or None (and a FAIL) if not."""
        proc = self.run(command, *args)
        if proc.returncode != 0:
            CHECKS.check(
                f"[{self.kind}] {proc.shown} exits 0",
                False,
                f"exit {proc.returncode}\n     stdout: {proc.stdout.strip()}\n"
                f"     stderr: {proc.stderr.strip()}",
            )
            return None
        return proc.stdout

    def json(self, command, *args):
        """Runs a command with `-f json` and parses what it prints (None, and a FAIL, if it fails)."""
        out = self.ok(command, *args, "-f", "json")
        if out is None:
            return None
        try:
            return parse_json(out)
        except ValueError as e:
            CHECKS.check(f"[{self.kind}] {command} prints JSON", False, f"{e}: {out!r}")
            return None

    def value(self, command, *args):
        """Runs a command with `-f value`; returns its non-empty output lines."""
        out = self.ok(command, *args, "-f", "value")
        return None if out is None else [l for l in out.splitlines() if l.strip()]


def parse_json(out):
    # Create commands print "Created a new host:" before the JSON document.
    m = re.search(r"^[\[{]", out, re.M)
    if not m:
        raise ValueError("no JSON document in the output")
    return json.loads(out[m.start():])


def joined(text):
    """The client prints a list of objects in a ShowOne field as JSON objects joined by newlines."""
    text = (text or "").strip()
    decoder, items, i = json.JSONDecoder(), [], 0
    while i < len(text):
        obj, i = decoder.raw_decode(text, i)
        items.append(obj)
        while i < len(text) and text[i].isspace():
            i += 1
    return items


def http(base, method, path, body=None):
    """The same request straight to the server: (status, parsed body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def minute(t):
    return t.replace(second=0, microsecond=0)


def lease_date(t):
    return t.strftime(LEASE_FMT)


def utcnow():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def expect_error(cli, name, args, method, path, body=None):
    """The CLI must fail and print the server's own error_message for the same request."""
    proc = cli.run(*args)
    status, err = http(cli.endpoint, method, path, body)
    message = (err or {}).get("error_message") if isinstance(err, dict) else None
    CHECKS.check(f"[{cli.kind}] {name}: exits non-zero", proc.returncode != 0,
                 f"exit {proc.returncode}, stdout {proc.stdout.strip()!r}")
    if not CHECKS.check(f"[{cli.kind}] {name}: the server answers an error envelope",
                        status >= 400 and bool(message), f"{status} {err!r}"):
        return
    CHECKS.check(f"[{cli.kind}] {name}: prints the server's error_message",
                 f"ERROR: {message}" in proc.stderr,
                 f"want {message!r} in stderr {proc.stderr.strip()!r}")


def by_name(items, key, prefix):
    return [i for i in items if str(i.get(key, "")).startswith(prefix)]


def scenario(cli, days_ahead):
    """Runs every command; with cli.full False, skips the repeats (other lookups, other formats,
    other date options) and keeps one of each command and each request shape."""
    k = cli.kind
    full = cli.full
    p = f"{k}-"  # every host and lease of this pass carries this prefix
    h1n, h2n, h3n = f"{p}h1", f"{p}h2", f"{p}h3"

    # ---- hosts: create (with --extra), list, show by id and by name ----
    h1 = cli.json("host-create", h1n, "--extra", "gpu=true", "--extra", "vcpus=8",
                  "--extra", "memory_mb=4096", "--extra", "owner=alice")
    h2 = cli.json("host-create", h2n, "--extra", "gpu=false", "--extra", "rack=r1",
                  "--extra", "vcpus=16")
    h3 = cli.json("host-create", h3n, "--extra", "gpu=false", "--extra", "rack=r2",
                  "--extra", "vcpus=16")
    if not (h1 and h2 and h3):
        return
    CHECKS.eq(f"[{k}] host-create prints the name", h1.get("hypervisor_hostname"), h1n)
    CHECKS.eq(f"[{k}] host-create prints --extra capabilities",
              (h1.get("gpu"), h1.get("owner"), h2.get("rack")), ("true", "alice", "r1"))
    CHECKS.eq(f"[{k}] host-create: --extra vcpus/memory_mb set the facts",
              (h1.get("vcpus"), h1.get("memory_mb"), h2.get("vcpus")), (8, 4096, 16))
    id1, id2, id3 = h1["id"], h2["id"], h3["id"]
    CHECKS.check(f"[{k}] host ids are integer strings (the client's id pattern)",
                 all(re.fullmatch(r"[0-9]+", str(i)) for i in (id1, id2, id3)),
                 repr((id1, id2, id3)))

    hosts = cli.json("host-list")
    if hosts is not None:
        mine = by_name(hosts, "hypervisor_hostname", p)
        CHECKS.eq(f"[{k}] host-list columns",
                  [list(h) for h in mine[:1]],
                  [["id", "hypervisor_hostname", "vcpus", "memory_mb", "local_gb"]])
        CHECKS.eq(f"[{k}] host-list rows (sorted by hypervisor_hostname)",
                  [(h["id"], h["hypervisor_hostname"], h["vcpus"], h["memory_mb"]) for h in mine],
                  [(id1, h1n, 8, 4096), (id2, h2n, 16, 0), (id3, h3n, 16, 0)])
    names = cli.value("host-list", "-c", "hypervisor_hostname") if full else None
    if names is not None:
        CHECKS.eq(f"[{k}] host-list -f value -c hypervisor_hostname",
                  [n for n in names if n.startswith(p)], [h1n, h2n, h3n])

    shown = cli.json("host-show", id1) if full else None
    if shown:
        CHECKS.eq(f"[{k}] host-show by id",
                  (shown.get("hypervisor_hostname"), shown.get("owner"), shown.get("gpu")),
                  (h1n, "alice", "true"))
    shown = cli.json("host-show", h2n)
    if shown:
        CHECKS.eq(f"[{k}] host-show by name finds the id", (shown.get("id"), shown.get("rack")),
                  (id2, "r1"))

    # ---- host-update --extra (a flat body) and host-unset --extra (a null value) ----
    out = cli.ok("host-update", h3n, "--extra", "rack=r9", "--extra", "zone=z1")
    if out is not None:
        CHECKS.check(f"[{k}] host-update prints 'Updated host'", f"Updated host: {h3n}" in out, out)
    caps = cli.value("host-show", id3, "-c", "rack", "-c", "zone")
    CHECKS.eq(f"[{k}] host-update changed and added capabilities (host-show -f value)",
              caps, ["r9", "z1"])
    if k == "blazar":
        out = cli.ok("host-unset", id3, "--extra", "zone")
        if out is not None:
            CHECKS.check(f"[{k}] host-unset prints 'Updated host'", f"Updated host: {id3}" in out, out)
        shown = cli.json("host-show", id3)
        if shown:
            CHECKS.check(f"[{k}] host-unset removed the capability, kept the others",
                         "zone" not in shown and shown.get("rack") == "r9", repr(shown))
    else:
        # python-blazarclient 4.6.0 registers `reservation host unset` under a class name that does
        # not exist (UnsetAttributeHost vs UnsetAttributesHost), so OSC cannot load it. This check
        # holds only for that known defect; a client that loads the command gets the real check.
        proc = cli.run("host-unset", id3, "--extra", "zone")
        if "has no attribute 'UnsetAttributeHost'" in proc.stderr and proc.returncode != 0:
            CHECKS.check(f"[{k}] host unset: unavailable in this client (known client defect; "
                         f"the legacy pass covers host-unset)", True)
            CHECKS.notes.append("openstack reservation host unset cannot load in this "
                                "python-blazarclient (entry point names UnsetAttributeHost)")
        else:
            CHECKS.eq(f"[{k}] host unset exits 0", proc.returncode, 0)
            zone = cli.json("host-show", id3)
            CHECKS.check(f"[{k}] host unset removed the capability",
                         zone is not None and "zone" not in zone, repr(zone))

    # ---- host properties ----
    props = cli.json("host-property-list")
    if props is not None:
        names = {x["property"] for x in props}
        CHECKS.check(f"[{k}] host-property-list lists the capabilities",
                     {"gpu", "rack", "owner"} <= names, repr(sorted(names)))
        CHECKS.check(f"[{k}] host-property-list: facts given with --extra are not properties",
                     not names & {"vcpus", "memory_mb"}, repr(sorted(names)))
    detail = cli.json("host-property-list", "--detail") if full else None
    if detail is not None:
        d = {x["property"]: x for x in detail}
        CHECKS.eq(f"[{k}] host-property-list --detail: gpu values and flag",
                  (sorted(d.get("gpu", {}).get("property_values", [])), d.get("gpu", {}).get("private")),
                  (["false", "true"], False))
        CHECKS.eq(f"[{k}] host-property-list --detail: rack values",
                  sorted(d.get("rack", {}).get("property_values", [])), ["r1", "r9"])
    one = cli.json("host-property-show", "gpu")
    if one is not None:
        CHECKS.eq(f"[{k}] host-property-show gpu",
                  (one.get("property"), one.get("private"), sorted(one.get("property_values", []))),
                  ("gpu", False, ["false", "true"]))
    out = cli.ok("host-property-set", "rack", "--private")
    if out is not None:
        CHECKS.check(f"[{k}] host-property-set --private prints 'Updated host property'",
                     "Updated host property: rack" in out, out)
    props = cli.json("host-property-list") if full else None
    if props is not None:
        CHECKS.check(f"[{k}] host-property-list hides a private property",
                     "rack" not in {x["property"] for x in props}, repr(props))
    props = cli.json("host-property-list", "--all") if full else None
    if props is not None:
        CHECKS.check(f"[{k}] host-property-list --all shows it",
                     "rack" in {x["property"] for x in props}, repr(props))
    props = cli.json("host-property-list", "--detail", "--all")
    if props is not None:
        d = {x["property"]: x for x in props}
        CHECKS.eq(f"[{k}] host-property-list --detail --all: rack is private",
                  (d.get("rack", {}).get("private"), d.get("gpu", {}).get("private")), (True, False))
    cli.ok("host-property-set", "rack", "--public")
    flag = cli.value("host-property-show", "rack", "-c", "private")
    CHECKS.eq(f"[{k}] host-property-set --public (host-property-show -f value -c private)",
              flag, ["False"])

    # ---- leases: a future one with every --physical-reservation key, one starting now ----
    start = minute(utcnow()).replace(hour=10, minute=0) + dt.timedelta(days=days_ahead)
    end = start + dt.timedelta(days=1)
    before_end = end - dt.timedelta(hours=3)
    hyp = '["==", "$vcpus", "16"]'
    res = '["==", "$gpu", "false"]'
    spec = f"min=1,max=2,hypervisor_properties={hyp},resource_properties={res},before_end=snapshot"
    # The legacy command has --physical-reservation; OSC's `lease create` only --reservation.
    fname = f"{p}future"
    if k == "blazar":
        flag_args = ["--physical-reservation", spec]
    else:
        flag_args = ["--reservation", "resource_type=physical:host," + spec]
    lf = cli.json("lease-create", "--start-date", start.strftime(API_FMT),
                  "--end-date", end.strftime(API_FMT),
                  "--before-end-date", before_end.strftime(API_FMT), *flag_args, fname)
    if not lf:
        return
    fid = lf["id"]
    CHECKS.eq(f"[{k}] lease-create (future): name, dates, status",
              (lf.get("name"), lf.get("start_date"), lf.get("end_date"), lf.get("status")),
              (fname, lease_date(start), lease_date(end), "PENDING"))
    rs = joined(lf.get("reservations"))
    CHECKS.eq(f"[{k}] lease-create (future): the reservation as asked",
              [(r.get("resource_type"), r.get("min"), r.get("max"), r.get("hypervisor_properties"),
                r.get("resource_properties"), r.get("before_end")) for r in rs],
              [("physical:host", 1, 2, hyp, res, "snapshot")])
    rid = rs[0]["id"] if rs else None
    events = {e["event_type"]: e["time"] for e in joined(lf.get("events"))}
    CHECKS.eq(f"[{k}] lease-create (future): events at start, end, --before-end-date",
              events, {"start_lease": lease_date(start), "end_lease": lease_date(end),
                       "before_end_lease": lease_date(before_end)})

    nname = f"{p}now"
    now_spec = 'min=1,max=1,hypervisor_properties=,resource_properties=["==", "$gpu", "true"]'
    now_args = (["--physical-reservation", now_spec] if k == "blazar"
                else ["--reservation", "resource_type=physical:host," + now_spec])
    t0 = utcnow()
    ln = cli.json("lease-create", *now_args, nname)
    t1 = utcnow()
    if not ln:
        return
    nid = ln["id"]
    # start 'now' is the server's minute; the default end is the client's clock + 24 h, to the minute.
    ok_start = {lease_date(minute(t0)), lease_date(minute(t1))}
    ok_end = {lease_date(minute(t + dt.timedelta(days=1))) for t in (t0, t1)}
    CHECKS.check(f"[{k}] lease-create (now): start is now, end is 24 h later",
                 ln.get("start_date") in ok_start and ln.get("end_date") in ok_end,
                 f"{ln.get('start_date')} / {ln.get('end_date')}, want {ok_start} / {ok_end}")
    nrs = joined(ln.get("reservations"))
    CHECKS.eq(f"[{k}] lease-create (now): min/max and empty hypervisor_properties",
              [(r.get("min"), r.get("max"), r.get("hypervisor_properties"), r.get("before_end"))
               for r in nrs], [(1, 1, "", "default")])
    nrid = nrs[0]["id"] if nrs else None
    nend = dt.datetime.strptime(ln["end_date"], LEASE_FMT)

    leases = cli.json("lease-list")
    if leases is not None:
        mine = by_name(leases, "name", p)
        CHECKS.eq(f"[{k}] lease-list columns", [list(l) for l in mine[:1]],
                  [["id", "name", "start_date", "end_date"]])
        CHECKS.eq(f"[{k}] lease-list rows (sorted by name)",
                  [(l["id"], l["name"], l["start_date"]) for l in mine],
                  [(fid, fname, lease_date(start)), (nid, nname, ln["start_date"])])
    if full:
        shown = cli.json("lease-show", fid)
        CHECKS.eq(f"[{k}] lease-show by id", shown and shown.get("name"), fname)
    shown = cli.json("lease-show", nname)
    CHECKS.eq(f"[{k}] lease-show by name", shown and shown.get("id"), nid)

    # ---- allocations while both leases hold hosts ----
    allocs = cli.json("allocation-list", "host")
    if allocs is not None:
        held = {a["resource_id"]: sorted((r["lease_id"], r["id"], r["start_date"], r["end_date"])
                                         for r in a["reservations"])
                for a in allocs if a["resource_id"] in (id1, id2, id3)}
        CHECKS.eq(f"[{k}] allocation-list host: who holds what", held, {
            id1: [(nid, nrid, ln["start_date"], ln["end_date"])],
            id2: [(fid, rid, lease_date(start), lease_date(end))],
            id3: [(fid, rid, lease_date(start), lease_date(end))],
        })
    allocs = cli.json("allocation-list", "host", "--lease-id", nid) if full else None
    if allocs is not None:
        CHECKS.eq(f"[{k}] allocation-list host --lease-id",
                  sorted(a["resource_id"] for a in allocs if a["reservations"]), [id1])
    allocs = cli.json("allocation-list", "host", "--reservation-id", rid) if full else None
    if allocs is not None:
        CHECKS.eq(f"[{k}] allocation-list host --reservation-id",
                  sorted(a["resource_id"] for a in allocs if a["reservations"]), sorted([id2, id3]))
    one = cli.json("allocation-show", "host", id1)
    if one is not None:
        CHECKS.eq(f"[{k}] allocation-show host by id",
                  (one.get("resource_id"), [(r["lease_id"], r["id"]) for r in joined(one.get("reservations"))]),
                  (id1, [(nid, nrid)]))
    one = cli.json("allocation-show", "host", h2n) if full else None
    if one is not None:
        CHECKS.eq(f"[{k}] allocation-show host by name",
                  (one.get("resource_id"), [(r["lease_id"], r["id"]) for r in joined(one.get("reservations"))]),
                  (id2, [(fid, rid)]))

    # ---- lease-update: every date option, computed by the client from what it reads ----
    # Each step's expected dates follow from the previous step's, so steps can be skipped.
    def dates_after(label, args, want_start, want_end, lease=fid, key=True):
        if not (key or full):
            return
        out = cli.ok("lease-update", lease, *args)
        if out is None:
            return
        CHECKS.check(f"[{k}] lease-update {label} prints 'Updated lease'",
                     f"Updated lease: {lease}" in out, out)
        # ShowOne prints the chosen columns in its own (sorted) order: end_date, start_date.
        got = cli.value("lease-show", lease, "-c", "start_date", "-c", "end_date")
        CHECKS.eq(f"[{k}] lease-update {label}: end and start", got,
                  [lease_date(want_end), lease_date(want_start)])

    day, hour = dt.timedelta(days=1), dt.timedelta(hours=1)
    dates_after("--prolong-for 1d", ["--prolong-for", "1d"], start, end + day)
    dates_after("--reduce-by 90m", ["--reduce-by", "90m"], start, end + day - 1.5 * hour,
                key=False)
    # Without --reduce-by the end is still end + 1 day.
    cur_end = end + day - (1.5 * hour if full else dt.timedelta())
    dates_after("--defer-by 2h", ["--defer-by", "2h"], start + 2 * hour, cur_end)
    dates_after("--advance-by 30m", ["--advance-by", "30m"], start + 1.5 * hour, cur_end,
                key=False)
    new_end = end + 2 * day
    dates_after("--end-date", ["--end-date", new_end.strftime(API_FMT)],
                start + 1.5 * hour, new_end, key=False)
    dates_after("--start-date", ["--start-date", (start + hour).strftime(API_FMT)],
                start + hour, new_end, key=False)
    dates_after("--prolong-for 2h (lease started now)", ["--prolong-for", "2h"],
                dt.datetime.strptime(ln["start_date"], LEASE_FMT), nend + 2 * hour, lease=nid,
                key=False)
    allocs = cli.json("allocation-list", "host", "--lease-id", fid) if full else None
    if allocs is not None:
        CHECKS.eq(f"[{k}] allocations follow the new dates",
                  sorted({(r["start_date"], r["end_date"]) for a in allocs for r in a["reservations"]}),
                  [(lease_date(start + hour), lease_date(new_end))])

    fname2 = f"{p}renamed"
    out = cli.ok("lease-update", fname, "--name", fname2)
    if out is not None:
        CHECKS.check(f"[{k}] lease-update --name (by name) prints 'Updated lease'",
                     f"Updated lease: {fname}" in out, out)
    shown = cli.value("lease-show", fname2, "-c", "id", "-c", "name")
    CHECKS.eq(f"[{k}] lease-update --name: the lease is found by its new name", shown, [fid, fname2])
    cli.ok("lease-update", fid, "--reservation", f"id={rid},max=1")
    shown = cli.json("lease-show", fid)
    if shown:
        CHECKS.eq(f"[{k}] lease-update --reservation id=..,max=1",
                  [(r["id"], r["min"], r["max"]) for r in joined(shown.get("reservations"))],
                  [(rid, 1, 1)])
    allocs = cli.json("allocation-list", "host", "--reservation-id", rid)
    if allocs is not None:
        held = [a["resource_id"] for a in allocs if a["reservations"]]
        CHECKS.check(f"[{k}] max=1 leaves the reservation one of its two hosts",
                     len(held) == 1 and held[0] in (id2, id3), repr(held))

    # ---- errors: non-zero exit and the server's error_message ----
    unknown = str(uuid.uuid4())
    expect_error(cli, "lease-show of an unknown id", ("lease-show", unknown),
                 "GET", f"/leases/{unknown}")
    if full:
        expect_error(cli, "host-show of an unknown id", ("host-show", "99999"), "GET",
                     "/os-hosts/99999")
    greedy = f"{p}greedy"
    gstart, gend = start + 10 * day, start + 11 * day
    greedy_spec = "min=4,max=4,hypervisor_properties=,resource_properties="
    greedy_args = (["--physical-reservation", greedy_spec] if k == "blazar"
                   else ["--reservation", "resource_type=physical:host," + greedy_spec])
    # The body the client sends, to ask the server for its message directly.
    greedy_body = {"name": greedy, "start_date": gstart.strftime(API_FMT),
                   "end_date": gend.strftime(API_FMT), "before_end_date": None, "events": [],
                   "reservations": [{"min": 4, "max": 4, "hypervisor_properties": "",
                                     "resource_properties": "", "resource_type": "physical:host"}]}
    expect_error(cli, "lease-create asking for more hosts than exist",
                 ("lease-create", "--start-date", gstart.strftime(API_FMT),
                  "--end-date", gend.strftime(API_FMT), *greedy_args, greedy),
                 "POST", "/leases", greedy_body)
    if full:
        names = cli.value("lease-list", "-c", "name")
        CHECKS.check(f"[{k}] the refused lease was not created",
                     names is not None and greedy not in names, repr(names))
        expect_error(cli, "host-update of a capability a lease filters on",
                     ("host-update", h1n, "--extra", "gpu=false"), "PUT", f"/os-hosts/{id1}",
                     {"gpu": "false"})
    expect_error(cli, "host-delete of a reserved host", ("host-delete", h1n),
                 "DELETE", f"/os-hosts/{id1}")
    if full:
        gpu = cli.value("host-show", id1, "-c", "gpu")
        CHECKS.eq(f"[{k}] the refused update and delete changed nothing", gpu, ["true"])

    # ---- delete leases (by name, by id), then hosts (by name, by id) ----
    out = cli.ok("lease-delete", fname2)
    if out is not None:
        CHECKS.check(f"[{k}] lease-delete by name prints 'Deleted lease'",
                     f"Deleted lease: {fname2}" in out, out)
    out = cli.ok("lease-delete", nid)
    names = cli.value("lease-list", "-c", "name")
    CHECKS.eq(f"[{k}] lease-delete: the leases are gone",
              names is not None and [n for n in names if n.startswith(p)], [])
    allocs = cli.json("allocation-list", "host")
    if allocs is not None:
        CHECKS.eq(f"[{k}] lease-delete frees the hosts",
                  sorted((a["resource_id"], len(a["reservations"])) for a in allocs
                         if a["resource_id"] in (id1, id2, id3)),
                  sorted([(id1, 0), (id2, 0), (id3, 0)]))
    out = cli.ok("host-delete", h1n)
    if out is not None:
        CHECKS.check(f"[{k}] host-delete by name prints 'Deleted host'",
                     f"Deleted host: {h1n}" in out, out)
    cli.ok("host-delete", id2)
    cli.ok("host-delete", id3)
    names = cli.value("host-list", "-c", "hypervisor_hostname")
    CHECKS.eq(f"[{k}] host-delete: the hosts are gone",
              names is not None and [n for n in names if n.startswith(p)], [])
    if full:
        expect_error(cli, "host-show of a deleted host", ("host-show", id2), "GET",
                     f"/os-hosts/{id2}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.dirname(sys.executable))
    ap.add_argument("--blazar", help="endpoint for the legacy `blazar` pass")
    ap.add_argument("--openstack", help="endpoint for the `openstack reservation` pass")
    ap.add_argument("--full-openstack", action="store_true",
                    help="run every step through openstack too, not only the key commands")
    args = ap.parse_args()
    if not (args.blazar or args.openstack):
        ap.error("give --blazar URL and/or --openstack URL")
    started = time.monotonic()
    # Different lease windows per pass, in case both passes share one server.
    passes = (("blazar", args.blazar, 30, True),
              ("openstack", args.openstack, 60, args.full_openstack))
    for kind, endpoint, days, full in passes:
        if not endpoint:
            continue
        if not os.access(os.path.join(args.bin, kind), os.X_OK):
            sys.exit(f"no executable {kind} in {args.bin}")
        print(f"== {kind} against {endpoint} ({'every step' if full else 'key commands'})",
              flush=True)
        cli = Cli(kind, args.bin, endpoint.rstrip("/"), full)
        pass_started = time.monotonic()
        scenario(cli, days)
        print(f"== {kind}: {cli.commands} commands in {time.monotonic() - pass_started:.1f} s",
              flush=True)
    for note in CHECKS.notes:
        print(f"NOTE {note}")
    print(f"{CHECKS.passed} passed, {CHECKS.failed} failed "
          f"({time.monotonic() - started:.1f} s)")
    sys.exit(1 if CHECKS.failed or not CHECKS.passed else 0)


if __name__ == "__main__":
    main()
