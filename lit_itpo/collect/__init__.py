"""Local D4RL-style datasets: SAC behaviour agent, D4RL recipes, Minari writing (collect)."""
