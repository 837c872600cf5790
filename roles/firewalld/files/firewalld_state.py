# Read-only helper of pyweb.stack.firewalld, run on the target with the system python3 (firewalld's bindings).
# Reads {"zone": name, "rich_rules": [rule, ...]} on stdin and prints, as JSON, the default zone, the zones and
# services firewalld knows, the runtime and permanent settings of the zone, and the given rich rules in firewalld's
# own canonical form (or why firewalld's parser rejects them). With "parse_only" it only parses the rules, without
# asking the daemon (the preflight, which may run before firewalld does). It changes nothing.
import json
import sys

from firewall.client import FirewallClient
from firewall.core.rich import Rich_Rule


def zone_settings(settings):
    """The settings that open something, as firewall-cmd prints them."""
    return {
        "target": settings.getTarget(),
        "services": sorted(settings.getServices()),
        "ports": sorted(f"{port}/{proto}" for port, proto in settings.getPorts()),
        "protocols": sorted(settings.getProtocols()),
        "source_ports": sorted(f"{port}/{proto}" for port, proto in settings.getSourcePorts()),
        "rich_rules": sorted(settings.getRichRules()),
    }


def canonical_rules(rules):
    """firewalld's canonical text of each rule, and the errors of the rules its parser rejects."""
    canonical, errors = [], []
    for rule in rules:
        try:
            parsed = Rich_Rule(rule_str=rule)
            parsed.check()
        except Exception as error:  # firewalld raises FirewallError, and ValueError for some bad values
            errors.append(f"{rule!r}: {error}")
        else:
            canonical.append(str(parsed))
    return canonical, errors


def main():
    request = json.load(sys.stdin)
    if request.get("parse_only"):  # the preflight: no daemon needed (and none may run yet), only the parser
        rules, errors = canonical_rules(request.get("rich_rules", []))
        json.dump({"rich_rules": rules, "rich_rule_errors": errors}, sys.stdout, sort_keys=True)
        return
    zone = request["zone"]
    client = FirewallClient()
    if not client.connected:
        sys.exit("firewalld does not answer on D-Bus: is firewalld.service running?")
    config = client.config()
    permanent_zones = sorted(config.getZoneNames())
    state = {
        "default_zone": client.getDefaultZone(),
        "zones": permanent_zones,
        "services_known": sorted(config.getServiceNames()),
        "runtime": None,
        "permanent": None,
    }
    if zone in permanent_zones:
        state["permanent"] = zone_settings(config.getZoneByName(zone).getSettings())
    if zone in client.getZones():
        state["runtime"] = zone_settings(client.getZoneSettings(zone))
    state["rich_rules"], state["rich_rule_errors"] = canonical_rules(request.get("rich_rules", []))
    json.dump(state, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
