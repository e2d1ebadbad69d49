"""Policies: the LLM agent, tabular, random and oracle agents, and generation backends."""

from creditgym.agents.base import Agent, Context, Turn
from creditgym.agents.hier_tabular import HierTabularAgent
from creditgym.agents.llm import LLMAgent
from creditgym.agents.oracle import OracleAgent
from creditgym.agents.random_agent import RandomAgent
from creditgym.agents.tabular import TabularSoftmaxAgent

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
