"""The composition root: the CLI, the monolith and split-mode wiring of the five modules."""
