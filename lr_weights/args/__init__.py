"""network_args strings -> frozen, validated settings: scalars, key checks, block-weight specs, LBW."""
