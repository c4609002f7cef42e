"""`python -m node` runs the hashmesh CLI."""

from node.cli import main

main()
