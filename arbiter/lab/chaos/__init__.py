"""Issue 14's nemesis, pure parts: the chaos schedule model (`schedule`) and its shrinker (`shrink`)."""
