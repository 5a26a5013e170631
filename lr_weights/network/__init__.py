"""Targets -> module plans -> the network, its optimizer groups and per-block table; one entry factory."""
