"""Files: atomic writes and hashes, loading weights into a network, reading and baking LoRA / LyCORIS files."""
