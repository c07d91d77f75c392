"""Environment factories from env ids or a dataset's stored env spec.

Maze envs live in gymnasium-robotics, which registers them on import; everything that makes an
env goes through here so that import is never forgotten (and the maze envs' temp XML files are
removed: :func:`register_env_packages`).
"""

from __future__ import annotations

import functools
import logging
import os

import gymnasium as gym
import mujoco

from lit_itpo.errors import EnvSpecError

log = logging.getLogger(__name__)


def _mujoco_warning(message: str) -> None:
    """MuJoCo's warnings through logging instead of raw stderr. Its deprecation of the
    ``settotalmass`` compiler attribute, which gymnasium's HalfCheetah XML still uses, is
    harmless and came once per env made (155 lines in one pipeline run): debug level."""
    level = logging.DEBUG if "settotalmass" in message else logging.WARNING
    log.log(level, "MuJoCo: %s", message)


mujoco.set_mju_user_warning(_mujoco_warning)


def is_maze(env_id: str) -> bool:
    """PointMaze / AntMaze (gymnasium-robotics): dict observations with a goal, ``success``."""
    return "Maze" in env_id


MAZE_ENTRY_POINTS = "gymnasium_robotics.envs.maze."


def drop_maze_xml(entry_point) -> None:
    """gymnasium-robotics builds a maze env (PointMaze, AntMaze) from an XML it writes to
    ``<temp folder>/ant_maze<time>.xml`` (``Maze.make_maze``) and never removes: one file per env
    made, ~80 per test run, thousands per benchmark. MuJoCo reads it once, in the env's
    ``__init__``; the env class of ``entry_point`` (a maze's, else nothing is done) gets an
    ``__init__`` that removes the file as it returns, or fails."""
    if not (isinstance(entry_point, str) and entry_point.startswith(MAZE_ENTRY_POINTS)):
        return
    cls = gym.envs.registration.load_env_creator(entry_point)
    init = cls.__init__
    if getattr(init, "_drops_maze_xml", False):
        return

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        finally:
            xml = getattr(self, "tmp_xml_file_path", None)
            if xml and os.path.basename(xml).startswith("ant_maze"):
                try:
                    os.remove(xml)
                except OSError:
                    pass

    __init__._drops_maze_xml = True
    cls.__init__ = __init__


def register_env_packages(env_id: str) -> None:
    """Import the package that registers ``env_id`` (gymnasium-robotics for mazes; a maze's env
    class then removes its temp XML, :func:`drop_maze_xml`)."""
    if is_maze(env_id) or "Adroit" in env_id or "Fetch" in env_id:
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    if is_maze(env_id):
        try:
            entry_point = gym.spec(env_id).entry_point
        except gym.error.Error:
            return  # not registered: gym.make says so
        drop_maze_xml(entry_point)


def gym_spec(env_id: str, **kwargs) -> gym.envs.registration.EnvSpec:
    """The gymnasium ``EnvSpec`` of ``env_id`` with ``kwargs`` applied (kept in Minari metadata).

    Raises:
        EnvSpecError: the id is unknown or the env cannot be made with these kwargs.
    """
    register_env_packages(env_id)
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise EnvSpecError(
            f"Environment id '{env_id}' is not registered with gymnasium ({exc}); use e.g. "
            "HalfCheetah-v5, Hopper-v5, Walker2d-v5 or PointMaze_UMaze-v3."
        ) from exc
    except TypeError as exc:
        raise EnvSpecError(f"Environment '{env_id}' rejects kwargs {kwargs}: {exc}.") from exc
    spec = env.spec
    env.close()
    return spec


def make_gym_env(spec: gym.envs.registration.EnvSpec | str) -> gym.Env:
    """A gymnasium env from a spec (or its JSON, as Minari stores it, or a plain id)."""
    if isinstance(spec, str):
        if spec.lstrip().startswith("{"):
            spec = gym.envs.registration.EnvSpec.from_json(spec)
        else:
            register_env_packages(spec)
            return gym.make(spec)
    register_env_packages(spec.id)
    drop_maze_xml(spec.entry_point)  # a stored spec may name its own entry point
    return gym.make(spec)


# The healthy-state rules of gymnasium's v5 MuJoCo locomotion envs, on the observation (x
# excluded: obs[0] is the torso height z, obs[1] its angle), as ITPO's imagination needs them:
# ``next_obs [..., o] -> [...]`` True where the env would terminate.
def _hopper_falls(obs):
    return (obs[..., 0] <= 0.7) | (obs[..., 1].abs() >= 0.2) | (obs[..., 1:].abs() >= 100).any(-1)


def _walker_falls(obs):
    return (obs[..., 0] <= 0.8) | (obs[..., 0] >= 2.0) | (obs[..., 1].abs() >= 1.0)


TERMINATION_RULES = {"Hopper": _hopper_falls, "Walker2d": _walker_falls}


def termination_rule(env_id: str):
    """The env family's known termination rule on observations (Hopper, Walker2d), None for
    envs that never terminate on their state (HalfCheetah, Swimmer) or whose rule is unknown."""
    family = env_id.split("/")[-1].split("-v")[0]
    return TERMINATION_RULES.get(family)
