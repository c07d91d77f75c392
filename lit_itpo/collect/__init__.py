"""Local D4RL-style datasets: a SAC behaviour agent, D4RL's recipes, Minari writing (``lit-itpo collect``)."""
