"""STONITH drivers behind one small interface, and the orchestration every driver shares.

- `base`: the `Fencer` protocol (`power_off`, `power_on`, `status` that never raises, `check`; each power call
  takes the `timeout` its caller has left and is stopped there), `FenceError`, and `within`, the hard deadline
  every driver call runs under.
- `ipmi` (pyghmi), `ssh` (paramiko), `agent` (any ClusterLabs `fence_*` agent): one file per driver.
- `registry`: drivers by name; builds one from a `[[peer]] fence` entry of the config.
- `orchestration`: levels, already-off, send/wait/poll under one monotonic deadline per level, the lease checked
  before each power-off, race delay, hold-down (power read afresh, never assumed OFF), events.
- `testing`: `FakeFencer`, a real in-memory driver for unit tests.

Drivers only talk to their device; what counts as "fenced" is decided once, in `orchestration`.
"""
