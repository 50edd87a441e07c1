"""Plugin losses (registered in BasicSR's LOSS_REGISTRY on import)."""
