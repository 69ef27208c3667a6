"""Evaluation of trained text-to-image models: the papers' generation metrics, cross-attention
maps, BiBadDiff's G1-G4 dissection, the diffusion classifier and replication of generations."""
