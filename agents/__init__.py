"""Policies: the LLM agent, tabular, random and oracle agents, and generation backends."""

from agents.base import Agent, Context, Turn
from agents.hier_tabular import HierTabularAgent
from agents.llm import LLMAgent
from agents.oracle import OracleAgent
from agents.random_agent import RandomAgent
from agents.tabular import TabularSoftmaxAgent

__all__ = [
    "Agent",
    "Context",
    "HierTabularAgent",
    "LLMAgent",
    "OracleAgent",
    "RandomAgent",
    "TabularSoftmaxAgent",
    "Turn",
]
