"""`python -m sluicegate.sim`: run simulated vLLM servers on uvloop until interrupted."""

from sluicegate.sim.cli import main

main()
