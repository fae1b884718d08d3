"""The LangGraph state machine: one run per customer message, checkpointed after every node.

intake → understand → decide ─┬─ act ──→ decide (again, until it answers or hands off)
├─ reply ──→ END (or decide, when a solved problem lets a queued one begin)
├─ incident → END (many people, one cause: attached to an incident)
└─ handoff → END
"""

from __future__ import annotations

from typing import Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent import nodes
from agent.deps import Deps
from agent.state import ACTING, ConversationState


def after_decide(state: ConversationState) -> Literal["act", "reply", "handoff", "incident"]:
    """Acting decisions loop back through decide; the rest end the turn."""
    action = state["decision"]["action"]
    if action == "handoff":
        return "handoff"
    if action == "incident":
        return "incident"
    if action in ACTING:
        return "act"
    return "reply"


def after_reply(state: ConversationState) -> Literal["decide", "__end__"]:
    """A reply that closed a solved problem lets the customer's queued problem begin in the same turn."""
    return "decide" if state.get("take_queued") else "__end__"


def build_graph(
    checkpointer: BaseCheckpointSaver[str] | None = None,
) -> CompiledStateGraph[ConversationState, Deps, ConversationState, ConversationState]:
    """Compile the resolver graph; pass a checkpointer to keep conversations across runs."""
    graph = StateGraph(ConversationState, context_schema=Deps)
    graph.add_node("understand", nodes.understand)
    graph.add_node("decide", nodes.decide)
    graph.add_node("act", nodes.act)
    graph.add_node("reply", nodes.reply)
    graph.add_node("handoff", nodes.handoff)
    graph.add_node("incident", nodes.incident)
    graph.add_edge(START, "understand")
    graph.add_edge("understand", "decide")
    graph.add_conditional_edges("decide", after_decide)
    graph.add_edge("act", "decide")
    graph.add_conditional_edges("reply", after_reply)
    graph.add_edge("handoff", END)
    graph.add_edge("incident", END)
    return graph.compile(checkpointer=checkpointer)
