"""Building blocks every other package uses; imports nothing of Tierone's own."""
