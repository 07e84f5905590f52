"""`python -m wansweep.cli`: the `wansweep` command."""

from wansweep.cli import main

main()
