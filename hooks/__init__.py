"""What keepalived executes: the notify hook (stdlib only, tiny, fast)."""
