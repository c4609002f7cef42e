"""hashmesh node: the imperative shell around the pure protocol core.

It reads the world (HTTP, SQLite, files, clock, config), asks ``protocol`` what to do,
and writes the answer back.
"""
