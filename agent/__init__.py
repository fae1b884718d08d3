"""Tierone's resolver: state, graph, nodes, the policy boundary, the handoff packet and the brains."""
