"""Learning: support sets built from corrections, and how they are matched."""
