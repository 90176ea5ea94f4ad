"""STONITH drivers behind one small interface, and the orchestration every driver shares (issue 5)."""
