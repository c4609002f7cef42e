"""The node's SQLite store: schema, the merge writer, materialised state, reads, change feed."""
