"""The eval harness: play cases through the serving graph, score them, report."""
