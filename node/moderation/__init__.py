"""Moderation: what a node does with the matches it answers (issue 20).

A match answer is complete when ``node.net.matching`` hands it to ``Moderation.observe``: the
hits are turned into ``MatchEvent`` values (``events``) and put on a bounded in-memory queue;
nothing on the match path waits for SQLite. A background task writes the queue in batches to
``HOME/moderation.db`` (``db``), a file of its own beside the signed-record store:

- ``matchlog``: the match log (every hit: time, caller, query, signal, distance), counted per
  signal, pruned by age and row count, read in pages by the API and the web UI;
- ``quarantine``: the flood rule (a signal matching far above its own history is quarantined
  locally: still answered and logged, its actions held until an operator releases it);
- ``webhooks``: the durable delivery queue of ``[[webhooks]]`` rules, signed with
  HMAC-SHA256, retried with exponential backoff and jitter, dead-lettered after repeated
  failures;
- ``sightings``: the `seen` opinions published (off by default, per label) the first time a
  federation signal matches here, in rate-limited batches, through ``Node.author``;
- ``service``: ``Moderation``, which owns the queue, the database thread and the background
  tasks, and answers the local API (``node.net.moderation_api``), the CLI and the web UI.

This room sits below ``net``: it knows the store and the config, never the HTTP app; the app
hands it what it needs (the store, a way to sign a body, this member's identity).
"""
