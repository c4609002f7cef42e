"""A deterministic simulator of whole federations (issue 19).

N simulated nodes, each running the real acceptance machine (``protocol.ledger``) over an
in-memory store (``sim.store``) and the real gossip engine (``protocol.gossip``), on a
simulated clock and network (``sim.scheduler``, ``sim.network``), with the faults of
``sim.scenarios`` and the invariants of ``sim.invariants``. ``sim.run`` runs one seed (a
replay, with its trace) or thousands (``make sim``); ``tests/bench/bench_sim_scale.py``
measures propagation and traffic at 10 to 1,000 members.
"""
