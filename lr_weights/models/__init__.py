"""Model trees without downloads: recorded reference skeletons (meta device) and tiny random models."""
