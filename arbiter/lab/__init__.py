"""The lab: real keepalived nodes in network namespaces, faults injected, history recorded and judged."""
