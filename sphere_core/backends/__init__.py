"""Model backends behind name registries: generators, PRMs, ORMs."""
