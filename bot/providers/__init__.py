"""Image providers (BFL, AI/ML API) behind one protocol."""
