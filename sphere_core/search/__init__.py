"""Pruned, PRM-guided search: the Eq.3 step reward, the lock-step search and its tree records."""
