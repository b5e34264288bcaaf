"""Drives blazar-server with the real `blazar` CLI (python-blazarclient) authenticated by Keystone.

Run it with the Python of the virtualenv that holds python-blazarclient (the `blazar` next to that
Python is used). With password auth the client gets a token from Keystone, finds our server in the
token's catalog (service type `reservation`) and sends `X-Auth-Token` on every request, so this
checks the whole Keystone path of a deployment:

  lease-list; lease-create (one physical host, a one-hour window starting in an hour);
  lease-show NAME (the client resolves the name through the list); lease-list contains it;
  lease-delete NAME; lease-list no longer contains it.

The server must have at least one free host for the window. With --expect-project-id the created
lease must belong to that project (the project of the token: only a server in Keystone mode
passes that). On success it prints one line of JSON (lease id, project id, commands run); on
failure it shows the failing command with its output and exits 1.

  --dry-run  prints the commands without talking to anything, and checks that the installed
             client knows each subcommand and option (`blazar help SUBCOMMAND`).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

BLAZAR = str(Path(sys.executable).parent / "blazar")
CLIENT_TIMEOUT = 120


def auth_args(a):
    return [
        "--os-auth-type", "password",
        "--os-auth-url", a.auth_url,
        "--os-username", a.username,
        "--os-password", a.password,
        "--os-project-name", a.project_name,
        "--os-user-domain-id", a.user_domain_id,
        "--os-project-domain-id", a.project_domain_id,
    ]


def client_env():
    # Only the flags count: OS_* variables of whoever runs us (a noauth OS_ENDPOINT, a token)
    # would silently change how the client authenticates.
    return {k: v for k, v in os.environ.items() if not k.startswith("OS_")}


def shown(cmd):
    out, hide = [], False
    for part in cmd:
        out.append("***" if hide else part)
        hide = part == "--os-password"
    return " ".join(out)


def blazar(a, *args, parse=True):
    cmd = [BLAZAR, *auth_args(a), *args]
    proc = subprocess.run(
        cmd, env=client_env(), capture_output=True, text=True, timeout=CLIENT_TIMEOUT
    )
    if proc.returncode != 0:
        sys.exit(
            f"FAILED ({proc.returncode}): {shown(cmd)}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    if not parse:
        return proc.stdout
    # lease-create prints "Created a new lease:" on stdout before the JSON.
    starts = [i for i in (proc.stdout.find("{"), proc.stdout.find("[")) if i >= 0]
    try:
        return json.loads(proc.stdout[min(starts):] if starts else proc.stdout)
    except ValueError:
        sys.exit(f"no JSON from {shown(cmd)}:\n{proc.stdout}")


def minute(t):
    return t.strftime("%Y-%m-%d %H:%M")


def plan(a):
    """The commands, in order, as (args, parse-as-JSON)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)
    start, end = now + datetime.timedelta(hours=1), now + datetime.timedelta(hours=2)
    create = [
        "lease-create",
        "--physical-reservation", "min=1,max=1,hypervisor_properties=,resource_properties=",
        "--start-date", minute(start),
        "--end-date", minute(end),
        a.lease_name,
        "-f", "json",
    ]
    return [
        (["lease-list", "-f", "json"], True),
        (create, True),
        (["lease-show", a.lease_name, "-f", "json"], True),
        (["lease-list", "-f", "json"], True),
        (["lease-delete", a.lease_name], False),
        (["lease-list", "-f", "json"], True),
    ]


def dry_run(a):
    checked = set()
    for args, _ in plan(a):
        print(shown([BLAZAR, *auth_args(a), *args]))
        sub = args[0]
        if sub in checked:
            continue
        checked.add(sub)
        helptext = subprocess.run(
            [BLAZAR, "help", sub], env=client_env(), capture_output=True, text=True,
            timeout=CLIENT_TIMEOUT,
        )
        if helptext.returncode != 0:
            sys.exit(f"the installed client has no `{sub}`:\n{helptext.stderr}")
        for opt in (x for x in args[1:] if x.startswith("--")):
            if opt not in helptext.stdout:
                sys.exit(f"`blazar {sub}` has no option {opt}")
    # The auth options come from the keystoneauth plugin, so the top-level help lists them only
    # once the plugin is chosen.
    top = subprocess.run(
        [BLAZAR, "--os-auth-type", "password", "--help"], env=client_env(), capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )
    for opt in (x for x in auth_args(a) if x.startswith("--")):
        if opt not in top.stdout:
            sys.exit(f"`blazar` has no global option {opt}")
    print(json.dumps({"dry_run": True, "commands": len(plan(a))}))


def names(leases):
    return [lease["name"] for lease in leases]


def real_run(a):
    steps = plan(a)
    (list_args, _), (create_args, _), (show_args, _) = steps[0], steps[1], steps[2]
    before = blazar(a, *list_args)
    if a.lease_name in names(before):
        sys.exit(f"a lease named {a.lease_name} already exists")
    created = blazar(a, *create_args)
    lease_id = created["id"]
    if created["name"] != a.lease_name:
        sys.exit(f"lease-create returned {created}")
    shown_lease = blazar(a, *show_args)
    if shown_lease["id"] != lease_id:
        sys.exit(f"lease-show {a.lease_name} found {shown_lease['id']}, created {lease_id}")
    project_id = shown_lease.get("project_id")
    if a.expect_project_id is not None and project_id != a.expect_project_id:
        blazar(a, *steps[4][0], parse=False)  # leave no lease behind for the next run
        sys.exit(
            f"lease {lease_id} belongs to project {project_id}, not to the token's project "
            f"{a.expect_project_id}"
        )
    if a.lease_name not in names(blazar(a, *steps[3][0])):
        sys.exit(f"lease-list does not show {a.lease_name}")
    blazar(a, *steps[4][0], parse=False)
    if a.lease_name in names(blazar(a, *steps[5][0])):
        sys.exit(f"lease-list still shows {a.lease_name} after lease-delete")
    print(json.dumps({"lease_id": lease_id, "project_id": project_id, "commands": len(steps)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--auth-url", required=True, help="Keystone, e.g. http://127.0.0.1:5000/v3")
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--project-name", required=True)
    p.add_argument("--user-domain-id", default="default")
    p.add_argument("--project-domain-id", default="default")
    p.add_argument("--lease-name", default=f"ks-lease-{uuid.uuid4().hex[:8]}")
    p.add_argument("--expect-project-id", help="the project the created lease must belong to")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args()
    (dry_run if a.dry_run else real_run)(a)


if __name__ == "__main__":
    main()
