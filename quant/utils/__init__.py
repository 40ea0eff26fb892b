"""Small shared helpers: atomic file writes and friends."""
