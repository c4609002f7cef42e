"""The offline and live audit: sources read, checks run, the transparency report."""
