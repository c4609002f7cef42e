"""`python -m node` runs the hashmesh CLI."""

from node.cli.main import main

main()
