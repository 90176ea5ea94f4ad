"""The evidence the policy decides on, each gathered from the real thing at the agent's edges.

- `lease`: the Redis lease per VRRP instance with fencing tokens (redis-py asyncio, Lua compare-owner scripts),
  and the local state file that keeps the highest token seen across Redis restarts.
- `reference`: reference-IP quorum (icmplib), k of n replies with rise/fall hysteresis.
- `heartbeat`: signed, versioned frames between the nodes over UDP on every interface and over serial lines,
  with per-medium up/down tracking.

Nothing here decides anything: each module turns IO into the frozen values of `arbiter.model`.
"""
