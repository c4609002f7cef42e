"""The match replica: a stateless process that follows a node's change feed and answers
matches from memory (``hashmesh replica``; node.replica.app)."""
