"""LINE's trainable module (F, G, the negation projector), its losses, the knowledge graph it reads, G's CPU kernel, and projection of whole row sets."""
