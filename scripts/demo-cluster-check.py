"""Check the four-host demo through its web host, as a browser on this machine reaches it, then print where it
answers and how to end it: nginx on web1 answers, requests reach both app hosts (each answer names its host), and
a celery task runs on worker1 through redis there.

Usage: python scripts/demo-cluster-check.py [WEB_CONTAINER]. Exits non-zero when a check fails.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

# The one-host demo's client (its fetch and expect), so that both demos ask the same way.
_spec = importlib.util.spec_from_file_location("demo_check", Path(__file__).with_name("demo-check.py"))
demo_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_check)

NETWORK = "pyweb-cluster"
APP_HOSTS = {"app1", "app2"}


def main() -> int:
    web = sys.argv[1] if len(sys.argv) > 1 else "pyweb-cluster-web1"
    try:
        inspect = demo_check.inspect_container(web)
        address = (inspect["NetworkSettings"]["Networks"][NETWORK]["IPAddress"], 443)
        status, _headers, body = demo_check.fetch(address, "GET", "/api/health")
        demo_check.expect(status == 200, f"/api/health through nginx on {web}: {status} {body[:200]!r}")
        print(f"ok  {web}: nginx answers /api/health")
        answered: dict[str, str] = {}
        for _ in range(20):
            status, _headers, body = demo_check.fetch(address, "GET", "/api/version")
            demo_check.expect(status == 200, f"/api/version: {status}")
            answer = json.loads(body)
            answered[answer["host"]] = answer["version"]
        demo_check.expect(
            set(answered) == APP_HOSTS, f"20 requests reached {sorted(answered)}, not {sorted(APP_HOSTS)}"
        )
        for host, version in sorted(answered.items()):
            print(f"ok  {host}: serves version {version} behind nginx")
        status, _headers, body = demo_check.fetch(address, "POST", "/api/tasks/add", body=b'{"x": 2, "y": 3}')
        demo_check.expect(
            status == 200 and json.loads(body).get("result") == 5, f"celery task: {status} {body[:200]!r}"
        )
        print("ok  worker1: celery added 2 + 3 = 5, through redis")
    except (demo_check.Unexpected, OSError, KeyError, ValueError) as exc:
        print(f"demo-cluster check failed: {exc}", file=sys.stderr)
        return 1
    print(f"\nThe four-host demo answers at https://{address[0]}/ (self-signed certificate).")
    print("Deploy again: ansible-playbook site.yml --inventory examples/flask_spa/inventory/cluster.yml --tags deploy")
    print("End it: make demo-cluster-destroy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
