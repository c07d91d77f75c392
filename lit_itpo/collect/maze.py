"""D4RL's maze2d recipe on gymnasium-robotics PointMaze (and AntMaze's dict layout).

Fu et al. 2020 (D4RL, Sec. 5, "Maze2D"): a planner gives waypoints through the maze grid and a
PD controller tracks them, with Gaussian action noise (``--noisy``); the goal is resampled when
reached (``continuing_task=True, reset_target=True``), so one episode visits several goals.
Here the planner is a breadth-first search over free cells (shortest path in cells, which is what
D4RL's Q-iteration over the grid computes), the PD gains are D4RL's (p = 10, d = -1).

Reference scores follow Minari's convention for its D4RL maze datasets: ``ref_min_score`` is a
uniform random policy's mean return and ``ref_max_score`` the controller's (noise-free), both on
the evaluation env.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class WaypointController:
    """Batched PD controller toward the next cell on a shortest grid path to ``desired_goal``.

    Args:
        maze: a gymnasium-robotics ``Maze`` (``env.unwrapped.maze``).
        p_gain, d_gain: PD gains (D4RL: 10, -1).
        noise: std of Gaussian noise added to actions before clipping (D4RL's noisy data: 0.5).
        seed: noise seed.
    """

    def __init__(
        self, maze, p_gain: float = 10.0, d_gain: float = -1.0, noise: float = 0.0, seed: int = 0
    ):
        self.maze = maze
        self.grid = np.array([[c == 1 for c in row] for row in maze.maze_map])  # True = wall
        self.p_gain, self.d_gain, self.noise = p_gain, d_gain, noise
        self.rng = np.random.default_rng(seed)
        self._dist: dict[tuple[int, int], np.ndarray] = {}

    def _distances(self, goal: tuple[int, int]) -> np.ndarray:
        if goal not in self._dist:
            dist = np.full(self.grid.shape, np.inf)
            dist[goal] = 0
            queue = deque([goal])
            while queue:
                r, c = queue.popleft()
                for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                    if not self.grid[nr, nc] and dist[nr, nc] == np.inf:
                        dist[nr, nc] = dist[r, c] + 1
                        queue.append((nr, nc))
            self._dist[goal] = dist
        return self._dist[goal]

    def target(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Next waypoint ``[2]`` from position ``pos [2]`` toward ``goal [2]``."""
        cell = tuple(int(x) for x in self.maze.cell_xy_to_rowcol(pos))
        goal_cell = tuple(int(x) for x in self.maze.cell_xy_to_rowcol(goal))
        if cell == goal_cell:
            return goal
        dist = self._distances(goal_cell)
        r, c = cell
        nbrs = [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
        nxt = min(nbrs, key=lambda rc: dist[rc])
        if dist[nxt] == 0:
            return goal
        return np.asarray(self.maze.cell_rowcol_to_xy(np.array(nxt)), dtype=np.float64)

    def __call__(self, obs: dict) -> np.ndarray:
        """Actions ``[N, 2]`` for a batch of PointMaze dict observations."""
        state, goal = np.asarray(obs["observation"]), np.asarray(obs["desired_goal"])
        pos, vel = state[:, :2], state[:, 2:4]
        targets = np.stack([self.target(p, g) for p, g in zip(pos, goal, strict=True)])
        act = self.p_gain * (targets - pos) + self.d_gain * vel
        if self.noise > 0:
            act = act + self.rng.normal(0.0, self.noise, act.shape)
        return np.clip(act, -1.0, 1.0).astype(np.float32)
