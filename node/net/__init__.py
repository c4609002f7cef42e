"""The node on the network: the aiohttp app, peer and local APIs, gossip, signatures, TLS."""
