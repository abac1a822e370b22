"""Agents: the per-prompt Q-network and the DQN learner (attacker and defender)."""

from ppd.agents.dqn import DQNAgent, DQNConfig, linear_epsilon, shipped_agent_path
from ppd.agents.qnet import QNet
from ppd.agents.replay import ReplayBuffer

__all__ = ["DQNAgent", "DQNConfig", "QNet", "ReplayBuffer", "linear_epsilon", "shipped_agent_path"]
