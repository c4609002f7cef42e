"""Bridges to what members already run: export/import formats, STIX 2.1, python-threatexchange."""
