"""Understanding: embedding messages and scoring them against what a channel learned."""
