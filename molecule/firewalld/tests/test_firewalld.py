"""pyweb.stack.firewalld on a real host: the zone read back with firewall-cmd, and real TCP clients on the controller.

The controller reaches the container through the docker bridge; its address there is the container's default gateway,
the address converge.yml put in the sources of admin port 9443 (9444 admits only networks the controller is not in).
"""

import errno
import shlex
import socket

import pytest

LISTENER_UNIT = "pyweb-firewalld-listener"
# Listened on inside the container: open to all (http service, a declared port), admin ports, and an undeclared one.
LISTENED_PORTS = (80, 8080, 8081, 9443, 9444)
EXPECTED_SERVICES = {"http", "https", "ssh"}
EXPECTED_PORTS = {"8080/tcp", "60000-60010/udp"}
# Errors a client sees when firewalld rejects (ICMP admin-prohibited / reset) or drops (timeout) a connection.
BLOCKED_ERRNOS = {errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ENETUNREACH, errno.EACCES}

LISTENER_CODE = """
import asyncio, sys
async def main():
    async def greet(reader, writer, port):
        writer.write(b"pyweb-listener %d\\n" % port)
        await writer.drain()
        writer.close()
    ports = map(int, sys.argv[1:])
    servers = [await asyncio.start_server(lambda r, w, p=p: greet(r, w, p), "0.0.0.0", p) for p in ports]
    await asyncio.gather(*(s.serve_forever() for s in servers))
asyncio.run(main())
"""


def parse_list_all(text):
    """`firewall-cmd --list-all` as a dict: 'key: values' lines split into sets, rich rules one per line."""
    zone = {}
    lines = text.splitlines()
    zone["name"] = lines[0].split()[0]
    rich_rules = set()
    in_rich_rules = False
    for line in lines[1:]:
        if in_rich_rules and line.startswith(("\t", "        ")):
            rich_rules.add(line.strip())
            continue
        key, _sep, value = line.strip().partition(":")
        in_rich_rules = key == "rich rules"
        zone[key] = set(value.split())
    zone["rich rules"] = rich_rules
    return zone


@pytest.fixture(scope="module")
def controller_address(host):
    """The controller's address as the container sees it: the default gateway on the docker bridge."""
    route = host.check_output("ip -4 route show default").split()
    return route[route.index("via") + 1]


@pytest.fixture(scope="module")
def container_address(host):
    return host.check_output("hostname -I").split()[0]


@pytest.fixture(scope="module")
def zones(host):
    return {
        "runtime": parse_list_all(host.check_output("firewall-cmd --list-all")),
        "permanent": parse_list_all(host.check_output("firewall-cmd --permanent --list-all")),
    }


@pytest.fixture(scope="module")
def listener(host):
    """A TCP greeter on every port in LISTENED_PORTS inside the container, as an unprivileged transient unit."""
    host.run(f"systemctl stop {LISTENER_UNIT}")
    host.run(f"systemctl reset-failed {LISTENER_UNIT}")
    cmd = [
        "systemd-run",
        f"--unit={LISTENER_UNIT}",
        "--property=DynamicUser=yes",
        "--property=AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "/usr/bin/python3",
        "-c",
        LISTENER_CODE,
        *map(str, LISTENED_PORTS),
    ]
    host.run_test(shlex.join(cmd))
    for _attempt in range(50):
        if all(host.socket(f"tcp://0.0.0.0:{port}").is_listening for port in LISTENED_PORTS):
            break
        host.run("sleep 0.2")
    yield
    host.run(f"systemctl stop {LISTENER_UNIT}")


def connect(address, port):
    """'open' and the greeting when a TCP connection from the controller succeeds, else 'blocked' and the error."""
    try:
        with socket.create_connection((address, port), timeout=5) as conn:
            conn.settimeout(5)
            return "open", conn.recv(64).decode()
    except TimeoutError:
        return "blocked", "timeout"
    except OSError as error:
        if error.errno in BLOCKED_ERRNOS:
            return "blocked", errno.errorcode[error.errno]
        raise


def test_firewalld_runs_and_starts_at_boot(host):
    service = host.service("firewalld")
    assert service.is_running
    assert service.is_enabled
    assert host.check_output("firewall-cmd --state") == "running"


def test_firewalld_drives_nftables(host):
    conf = host.file("/etc/firewalld/firewalld.conf").content_string
    assert "\nFirewallBackend=nftables" in conf
    tables = host.check_output(
        "python3 -c 'import nftables; n = nftables.Nftables(); print(n.cmd(\"list tables\")[1])'"
    )
    assert "table inet firewalld" in tables


def test_the_managed_zone_is_the_default(host, zones):
    assert host.check_output("firewall-cmd --get-default-zone") == "public"
    assert zones["runtime"]["name"] == "public"


@pytest.mark.parametrize("config", ["runtime", "permanent"])
def test_zone_opens_exactly_what_was_declared(zones, controller_address, config):
    zone = zones[config]
    assert zone["target"] == {"default"}
    assert zone["services"] == EXPECTED_SERVICES  # dhcpv6-client and ftp from prepare.yml are gone
    assert zone["ports"] == EXPECTED_PORTS  # 8081/tcp from prepare.yml is gone
    assert zone["rich rules"] == {
        f'rule family="ipv4" source address="{controller_address}/32" port port="9443" protocol="tcp" accept',
        'rule family="ipv4" source address="10.0.0.0/8" port port="9443" protocol="tcp" accept',
        'rule family="ipv4" source address="192.0.2.0/24" port port="9444" protocol="tcp" accept',
        'rule family="ipv6" source address="2001:db8::/32" port port="9444" protocol="tcp" accept',
    }
    for key in ("protocols", "source-ports", "forward-ports", "icmp-blocks", "sources"):
        assert zone[key] == set(), key
    assert zone["masquerade"] == {"no"}


def test_runtime_equals_permanent(zones):
    assert zones["runtime"] == zones["permanent"]


def test_every_test_port_listens_inside_the_container(host, listener):
    # So a blocked connection below is the firewall's doing, not a missing listener.
    for port in LISTENED_PORTS:
        assert host.socket(f"tcp://0.0.0.0:{port}").is_listening, port
        greeting = host.check_output(
            f"python3 -c 'import socket; print(socket.create_connection((\"127.0.0.1\", {port})).recv(64).decode())'"
        )
        assert greeting == f"pyweb-listener {port}"


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (80, "open"),  # service http
        (8080, "open"),  # firewalld_ports
        (8081, "blocked"),  # opened by prepare.yml, not declared: pruned
        (9443, "open"),  # admin port, the controller's address is in its sources
        (9444, "blocked"),  # admin port, the controller is in none of its sources
    ],
)
def test_controller_reaches_only_the_declared_ports(listener, container_address, port, expected):
    outcome, detail = connect(container_address, port)
    assert outcome == expected, f"{container_address}:{port} is {outcome} ({detail}), expected {expected}"
    if expected == "open":
        assert detail == f"pyweb-listener {port}\n"
