"""Tierone's resolver: state, graph, nodes, the policy boundary and the brains."""
