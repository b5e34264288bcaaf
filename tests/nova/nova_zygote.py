"""Starts the nova-conductor, nova-scheduler and nova-computes of a tests/nova/harness.py run
from ONE import of their command modules: each service is a fork of this process that runs its
own console script's main() (nova.cmd.conductor:main, ...) with its own command line.

Why: each of these processes spends over 2 s of CPU importing the same modules before it parses
its configuration; on a 2-core machine with 10 computes that is most of the start time. The
fork happens at the point where a real nova-compute has imported nova.cmd.compute and not yet
read its config, so what runs after it is the service's own code. (gunicorn's --preload does the
same for WSGI apps.) The harness can run the console scripts instead (NOVA_HARNESS_ZYGOTE=0).

Protocol: argv is `nova_zygote.py NOVA_CONF`. Then one JSON object per line on stdin,
{"binary": "nova-compute", "argv": [...], "out": "/path/to/service.out", "nice": 0}, and for
each one a line on stdout, {"pid": PID}. Each child is a session leader (its pid is its process
group).
The zygote exits when stdin closes; children live on.
"""
import json
import os
import signal
import sys

# The import-time backend choice (nova.monkey_patch reads concurrency_backend from the
# --config-file arguments) sees the run's nova.conf, as each service would.
_conf = sys.argv[1]
sys.argv = [sys.argv[0], "--config-file", _conf]

import nova.cmd.compute  # noqa: E402
import nova.cmd.conductor  # noqa: E402
import nova.cmd.scheduler  # noqa: E402

MAINS = {
    "nova-compute": nova.cmd.compute.main,
    "nova-conductor": nova.cmd.conductor.main,
    "nova-scheduler": nova.cmd.scheduler.main,
}


def child(request, bin_dir):
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if request.get("nice"):
        os.nice(request["nice"])
    out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    binary = request["binary"]
    sys.argv = [os.path.join(bin_dir, binary), *request["argv"]]
    try:
        import setproctitle

        setproctitle.setproctitle(" ".join([binary, *request["argv"]]))
    except ImportError:
        pass
    code = 0
    try:
        MAINS[binary]()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported like an uncaught exception, then exit
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def main():
    bin_dir = os.path.dirname(sys.executable)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request, bin_dir)
        print(json.dumps({"pid": pid}), flush=True)
        # Reap children that already ended (a crash at start); the rest outlive us.
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


if __name__ == "__main__":
    main()
