"""The agent: `daemon` (the per-node loop: evidence, `decide`, actions) and its edges to the local node —
everything it reads from or writes to keepalived and the NIC.

- `daemon`: `Agent`, run by `keepalived-arbiter run`; logs one JSON line per decision that changes something.
- `edges`: `Edges`, everything the agent reads or writes outside its memory, injected (`Agent.from_config`
  wires the real ones; tests/unit/agentfakes.py has a fake of each).

- `gate`: the track_file keepalived watches (the veto), written atomically.
- `netlink`: the VIPs appearing and disappearing on their interfaces (pyroute2 netlink events).
- `vrrp`: VRRP adverts seen on an interface after the host firewall (raw IP protocol 112 socket).
- `notify`: keepalived's state changes, from the notify hook (Unix socket server) and `vrrp_notify_fifo`.
- `arp`: gratuitous ARP for a VIP and probing who else answers ARP for it (AF_PACKET).
"""
