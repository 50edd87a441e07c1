"""Plugin architectures (registered in BasicSR's ARCH_REGISTRY on import)."""
