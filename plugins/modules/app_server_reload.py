#!/usr/bin/python
# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_server_reload
short_description: Reload an app server into the current release the release-aware way, and wait until it serves it
version_added: 0.2.0
author: pyweb.stack maintainers (@pyweb)
description:
  - After C(<base>/current) moved to a new release, moves the app's running server there without refusing a
    request, and returns once every process serves the new release (or fails saying which did not).
  - V(gunicorn) - a HUP when the release's venv is the one the master runs (gunicorn re-resolves its C(chdir) and
    forks new workers there); when the venv changed, a HUP after which the master executes itself again in place
    (same pid, sockets kept open, old workers serving until the new ones loaded the app), if its venv marker says
    it can; otherwise O(restart_command). Waits until the master has only new workers in the release (and, with
    O(env_file), every process carries that file's values).
  - V(uwsgi) - a chain reload (one worker at a time) when the venv is unchanged, a whole-vassal reload (the master
    executes itself again, keeping its sockets) when it changed or with O(full); twice with
    O(environment_changed). Waits until the master has its full set of new workers in the release.
  - V(daphne) - restarts the app's instances one at a time behind their systemd sockets, hiding the other
    instances' unix sockets until the restarted one answers its health path, so a dropped websocket client
    reconnects once, onto the new code; then the app's channels workers.
  - The logic is the collection's one copy (C(plugins/module_utils/_reload.py)); the host tools that a push runs
    (C(gunicorn-reload), C(uwsgi-reload), C(daphne-roll)) are command lines of the same code.
options:
  server:
    description: Which app server runs the app.
    type: str
    choices: [gunicorn, uwsgi, daphne]
    required: true
  timeout:
    description:
      - Seconds the whole reload may take (V(gunicorn), V(uwsgi)), or each daphne instance has to answer after its
        restart (V(daphne); default from the role's settings file).
    type: float
  pidfile:
    description: V(gunicorn) only, required there. The master's pidfile.
    type: path
  current:
    description: V(gunicorn) only, required there. The app's C(<base>/current) link.
    type: path
  venv_marker:
    description:
      - V(gunicorn) only, required there. The file the master's C(on_starting) hook writes, naming the venv its
        image runs and, on a second line, whether it switches venvs in place.
    type: path
  env_file:
    description: V(gunicorn) only. Also wait until the master and every worker were executed with this file's values.
    type: path
  force_restart:
    description: V(gunicorn) only. Restart through O(restart_command) whatever the venv.
    type: bool
    default: false
  wait_only:
    description:
      - V(gunicorn) only. Signal nothing; wait until the master the pidfile names has its workers in the release (a
        master a process manager has just started).
    type: bool
    default: false
  restart_command:
    description: V(gunicorn) only. The process manager's restart of the program (argv), for a master that cannot switch.
    type: list
    elements: str
    default: []
  app:
    description: V(uwsgi) and V(daphne), required there. The app's name (its vassal, or its daphne settings file).
    type: str
  config_dir:
    description:
      - V(uwsgi) and V(daphne). Where the vassal (C(<config_dir>/vassals/<app>.ini)) or the daphne settings
        (C(<config_dir>/<app>.json)) are; defaults C(/etc/uwsgi) and C(/etc/pyweb/daphne).
    type: path
  full:
    description: V(uwsgi) only. Reload the whole vassal even when the venv is unchanged.
    type: bool
    default: false
  environment_changed:
    description: V(uwsgi) only. The app's environment file changed; reload the whole vassal twice.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Reads the running server and returns the RV(action) a real run would take, signalling, touching and restarting
        nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details:
      - The releases and venv the server's processes run before, and the ones they run after (or would).
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: none
    details:
      - A reload is an action, like a handler's restart; it reports a change whenever the server was running. A server
        not running yet (its process manager starts it in the current release) is not changed.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - Run it where the roles' handlers do, after the swap of C(current) (the topic C(pyweb app released)); the roles
    C(pyweb.stack.gunicorn), C(pyweb.stack.uwsgi) and C(pyweb.stack.daphne) do.
seealso:
  - module: pyweb.stack.app_release
  - name: The release engine
    description: Who calls what (docs/architecture.md).
    link: https://github.com/pyweb/stack/blob/main/docs/architecture.md
"""

EXAMPLES = r"""
- name: Reload gunicorn into the current release, restarting through supervisor when the master cannot switch venvs
  pyweb.stack.app_server_reload:
    server: gunicorn
    pidfile: /run/shop/gunicorn.pid
    current: /srv/shop/current
    venv_marker: /run/shop/gunicorn.venv
    restart_command: [supervisorctl, restart, shop-web]
    timeout: 90

- name: Reload the uwsgi vassal of chatapp worker by worker (the whole vassal when the venv changed)
  pyweb.stack.app_server_reload:
    server: uwsgi
    app: chatapp

- name: Restart chatapp's daphne instances one at a time
  pyweb.stack.app_server_reload:
    server: daphne
    app: chatapp
"""

RETURN = r"""
action:
  description:
    - What was done (or, in check mode, would be). V(none) (the server is not running or not configured yet),
      V(hup), V(reexec), V(restart) (gunicorn), V(chain-reload), V(reload) (uwsgi), V(roll) (daphne).
  returned: always
  type: str
  sample: reexec
release:
  description: The release directory C(current) resolves to (gunicorn, uwsgi).
  returned: when the server runs
  type: str
  sample: /srv/shop/releases/20261201T101500Z
venv:
  description: The venv the release links to (gunicorn, uwsgi).
  returned: when the server runs
  type: str
  sample: /srv/shop/venvs/3f2a9c
master:
  description: The master's pid after the reload (gunicorn, uwsgi).
  returned: when the server runs, outside check mode
  type: int
  sample: 4121
workers:
  description: The worker pids serving the release after the reload (gunicorn, uwsgi).
  returned: when the server runs, outside check mode
  type: list
  elements: int
  sample: [4170, 4171]
restarted:
  description: The daphne units restarted, in order, with their old and new pids.
  returned: with O(server=daphne)
  type: list
  elements: dict
  sample: [{"unit": "daphne-chatapp@1.service", "old_pid": 310, "pid": 355}]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.pyweb.stack.plugins.module_utils._reload import (  # noqa: E402
    reload_gunicorn,
    reload_uwsgi,
    roll_daphne,
)

REQUIRED = {"gunicorn": ["pidfile", "current", "venv_marker"], "uwsgi": ["app"], "daphne": ["app"]}


def reload(module: AnsibleModule) -> tuple[bool, dict]:
    params = module.params

    def run(argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
        # run_command has no timeout: the restart command and /proc reads end on their own.
        del timeout
        return module.run_command(argv)

    timeout = {} if params["timeout"] is None else {"timeout": params["timeout"]}
    config_dir = {"config_dir": params["config_dir"]} if params["config_dir"] else {}
    if params["server"] == "gunicorn":
        return reload_gunicorn(
            params["pidfile"],
            params["current"],
            params["venv_marker"],
            run,
            force_restart=params["force_restart"],
            wait_only=params["wait_only"],
            env_file=params["env_file"],
            restart=params["restart_command"],
            check_mode=module.check_mode,
            **timeout,
        )
    if params["server"] == "uwsgi":
        return reload_uwsgi(
            params["app"],
            run,
            full=params["full"],
            environment=params["environment_changed"],
            check_mode=module.check_mode,
            **config_dir,
            **timeout,
        )
    return roll_daphne(params["app"], run, missing_ok=True, check_mode=module.check_mode, **config_dir, **timeout)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "server": {"type": "str", "choices": ["gunicorn", "uwsgi", "daphne"], "required": True},
            "timeout": {"type": "float"},
            "pidfile": {"type": "path"},
            "current": {"type": "path"},
            "venv_marker": {"type": "path"},
            "env_file": {"type": "path"},
            "force_restart": {"type": "bool", "default": False},
            "wait_only": {"type": "bool", "default": False},
            "restart_command": {"type": "list", "elements": "str", "default": []},
            "app": {"type": "str"},
            "config_dir": {"type": "path"},
            "full": {"type": "bool", "default": False},
            "environment_changed": {"type": "bool", "default": False},
        },
        required_if=[("server", server, names) for server, names in REQUIRED.items()],
        supports_check_mode=True,
    )
    ok, result = reload(module)
    action = result.get("action", "none")
    before = {"release": result.get("running_release"), "venv": result.get("running_venv")}
    after = {"release": result.get("release"), "venv": result.get("venv")}
    if module.params["server"] == "daphne":
        before = {"instances": "old processes" if action == "roll" else "unchanged"}
        after = {"instances": "restarted one at a time" if action == "roll" else "unchanged"}
    result.update(changed=action not in ("none", "wait"), diff={"before": before, "after": after})
    if not ok:
        module.fail_json(**{"msg": "the reload failed", **result})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
