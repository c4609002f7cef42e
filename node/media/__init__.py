"""Media in, matches out: hashing, the match index, matching requests."""
