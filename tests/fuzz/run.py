#!/usr/bin/env python3
"""Fuzzes a running blazar-server from the OpenAPI spec it serves, with schemathesis.

Usage: run.py BASE_URL [--max-examples N] [--max-time SECONDS] [--seed N] [--workers N]
              [--out DIR] [-- EXTRA_ST_ARGS...]

  BASE_URL        the server, e.g. http://127.0.0.1:1234 (its spec is BASE_URL/openapi.json)
  --max-examples  test cases per operation and phase (the budget; default 100)
  --max-time      seconds for the whole run: fuzzing and stateful testing repeat until it is
                  spent, within --max-examples per round (default: no time limit)
  --seed          schemathesis seed (default: random; printed, so a run can be replayed)
  --workers       concurrent requests (default 1)
  --out           where the config, id dictionaries and reports go (default: a new temp dir)

The server must hold some hosts and leases (tests/schemathesis.rs seeds them): their ids, the
reservation ids and the property names are read from the server and written as dictionaries
that the generated requests draw path/query ids from, so GET/PUT/DELETE on ids hit real
resources. Settings (checks, phases, value dictionaries) are in schemathesis.toml beside this
file. Run it with the Python of a virtualenv made from requirements.txt beside this file: it
starts `st` from the same virtualenv.

Prints the exact `st` command, schemathesis's own report (failures come with a curl command
that reproduces them), the responses per operation and status (also in OUT/statuses.json), then
one summary line:
  fuzz summary: generated=N failures=N errors=N positive=N negative=N tested=N/N
                stateful=STATUS exit=N report=PATH statuses=PATH        (on one line)
and exits with schemathesis's exit code (0 only when no check failed and nothing errored).
"""

import argparse
import glob
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def get_json(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as resp:
        return json.load(resp)


def write_dictionary(out, name, values):
    """A libFuzzer-style dictionary file: one quoted value per line."""
    if not values:
        sys.exit(
            f"run.py: the server has no {name.replace('_', ' ')}: seed it with hosts and leases "
            "first (see docs/fuzzing.md), or ids in paths would all be random"
        )
    with open(os.path.join(out, f"{name}.dict"), "w", encoding="utf-8") as f:
        for v in values:
            escaped = v.replace("\\", "\\\\").replace('"', '\\"')
            f.write(f'"{escaped}"\n')


def status_tally(report_dir):
    """Responses per operation and status code, and test cases per generation mode (positive or
    negative), from the NDJSON event log of the run."""
    tally, modes = {}, {}
    for path in glob.glob(os.path.join(report_dir, "ndjson-*.ndjson")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                event = json.loads(line).get("ScenarioFinished")
                if not event:
                    continue
                recorder = event["recorder"]
                for case in recorder.get("cases", {}).values():
                    mode = case["value"].get("meta", {}).get("generation", {}).get("mode", "?")
                    modes[mode] = modes.get(mode, 0) + 1
                for case_id, interaction in recorder.get("interactions", {}).items():
                    response = interaction.get("response")
                    case = recorder["cases"].get(case_id, {}).get("value", {})
                    label = f"{interaction['request']['method']} {case.get('path', '?')}"
                    status = str(response["status_code"]) if response else "none"
                    counts = tally.setdefault(label, {})
                    counts[status] = counts.get(status, 0) + 1
    return tally, modes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--max-time", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out")
    # Everything after `--` goes to `st run` as it is.
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]

    base = args.base_url.rstrip("/")
    out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="blazar-fuzz-"))
    os.makedirs(out, exist_ok=True)
    # Old reports must not be read as this run's.
    for old in glob.glob(os.path.join(out, "report", "*")):
        os.remove(old)
    seed = args.seed if args.seed is not None else random.randrange(2**31)

    # Known ids, as an admin (the noauth default) sees them.
    leases = get_json(base, "/v1/leases")["leases"]
    hosts = get_json(base, "/v1/os-hosts")["hosts"]
    props = get_json(base, "/v1/os-hosts/properties?all=True")["resource_properties"]
    write_dictionary(out, "lease_ids", [lease["id"] for lease in leases])
    write_dictionary(
        out,
        "reservation_ids",
        [r["id"] for lease in leases for r in lease["reservations"]],
    )
    write_dictionary(out, "host_ids", [h["id"] for h in hosts])
    write_dictionary(out, "property_names", [p["property"] for p in props])
    # Fresh names (host names must be unique: a few repeats then test the 409).
    write_dictionary(out, "names", [f"fuzz-{seed}-{i}" for i in range(100)])
    config = os.path.join(out, "schemathesis.toml")
    shutil.copyfile(os.path.join(HERE, "schemathesis.toml"), config)

    st = os.path.join(os.path.dirname(sys.executable), "st")
    report_dir = os.path.join(out, "report")
    cmd = [
        st,
        "--config-file",
        config,
        "run",
        f"{base}/openapi.json",
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(seed),
        "--workers",
        str(args.workers),
        "--no-color",
        "--report",
        "json,junit,ndjson",
        "--report-dir",
        report_dir,
    ]
    if args.max_time:
        cmd += ["--max-time", str(args.max_time)]
    cmd += extra
    print("+ " + shlex.join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=out)

    reports = glob.glob(os.path.join(report_dir, "json-*.json"))
    if len(reports) != 1:
        print(f"fuzz summary: no JSON report in {report_dir} exit={code}", flush=True)
        sys.exit(code or 1)
    with open(reports[0], encoding="utf-8") as f:
        report = json.load(f)
    ops = report["operations"]
    # What the server answered, so that a reader sees whether the run reached past validation
    # (tests/schemathesis.rs checks this too).
    tally, modes = status_tally(report_dir)
    print("responses per operation:")
    for label in sorted(tally):
        counts = " ".join(f"{s}x{n}" for s, n in sorted(tally[label].items()))
        print(f"  {label}: {counts}")
    with open(os.path.join(out, "statuses.json"), "w", encoding="utf-8") as f:
        json.dump(tally, f, indent=1, sort_keys=True)
    print(
        "fuzz summary: "
        f"generated={report['test_cases']['generated']} "
        f"failures={report['test_cases']['unique_failures']} "
        f"errors={len(report['errors'])} "
        f"positive={modes.get('positive', 0)} negative={modes.get('negative', 0)} "
        f"tested={ops['tested']}/{ops['selected']} "
        f"stateful={report['phases']['stateful']['status']} "
        f"exit={code} report={reports[0]} statuses={os.path.join(out, 'statuses.json')}",
        flush=True,
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
