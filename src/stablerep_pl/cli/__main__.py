"""`python -m stablerep_pl.cli ...` (what torchrun and the tests launch)."""

from stablerep_pl.cli import main

main()
