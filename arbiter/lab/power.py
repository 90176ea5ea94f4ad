"""`python -m arbiter.lab.power LAB_DIR off|on NODE`: what a node's BMC does to it (run by the chassis script).

Separate from the CLI on purpose: it is the BMC's wiring, not an operator's command (operators power nodes
through the BMC with ipmitool, or `keepalived-arbiter lab power-off NODE`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from arbiter.lab.topology import LabPlan, power_off_node, power_on_node


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("off", "on"):
        print("usage: python -m arbiter.lab.power LAB_DIR off|on NODE", file=sys.stderr)
        return 2
    plan = LabPlan.load(Path(argv[0]))
    if argv[1] == "off":
        power_off_node(plan, argv[2])
    else:
        power_on_node(plan, argv[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
