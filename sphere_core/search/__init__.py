"""Pruned, PRM-guided search (DESIGN §5): the Eq.3 step reward and the lock-step search."""
