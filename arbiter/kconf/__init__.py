"""keepalived.conf as the arbiter reads it: a parser (`parser`) and a linter for the causes of split-brain (`lint`)."""
