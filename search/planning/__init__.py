"""Deciding what runs: the run's options (`options`), the data it is bound to (`databind`), shared prefixes (`plan`),
prices (`price`), halving (`halving`), progress and status (`progress`, `status`), the design a budget buys and how
it learns (`budget`, `adaptive`), and the confirmation stage (`confirm`, `confirmation`)."""
