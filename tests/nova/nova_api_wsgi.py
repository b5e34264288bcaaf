"""gunicorn's entry point for both nova-apis of tests/nova/harness.py (noauth and Keystone).

Nova's WSGI app parses sys.argv with oslo.config, and under gunicorn that is gunicorn's own
command line (`-w 1 ...`), which kills every worker at import. So sys.argv is replaced before the
import, with only the log file (oslo.log would otherwise write to gunicorn's log, shared by every
gunicorn-hosted service). Which paste file and config files the app reads comes from
OS_NOVA_CONFIG_DIR and OS_NOVA_CONFIG_FILES (the paste file first), set by the harness.
"""
import os
import sys

sys.argv = [sys.argv[0], '--log-file', os.environ['NOVA_HARNESS_API_LOG']]

from nova.wsgi.osapi_compute import application  # noqa: E402,F401
