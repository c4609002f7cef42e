"""The `hashmesh` command line: one group (main.py), command modules, their shared options."""
