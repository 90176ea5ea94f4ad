"""keepalived-arbiter: the per-node agent (config, evidence, the pure policy, the loop, the lab)."""
