"""The shared core: request, result, image hygiene, device choice, pipeline cache, method registry."""
