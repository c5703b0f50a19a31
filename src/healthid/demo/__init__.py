"""Development helpers: synthetic data and the local stack of ``make run``."""
