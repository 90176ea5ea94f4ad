"""`python -m hooks TYPE NAME STATE [PRIORITY]`: the notify hook, as `keepalived-arbiter-notify`."""

from hooks.notify import main

raise SystemExit(main())
