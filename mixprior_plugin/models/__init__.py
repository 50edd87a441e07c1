"""Plugin models (registered in BasicSR's MODEL_REGISTRY on import)."""
