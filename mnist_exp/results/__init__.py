"""The results layer: reports, figures and leaderboards (arrays in, files out)."""
