"""The library's random number generator: one NumPy Generator for dropout, drop-path and
initialisation, whose state a checkpoint saves so that a resumed run draws the same numbers."""
import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator


def get_rng_state() -> dict:
    """The generator's state as plain JSON-serialisable Python values."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    _generator.bit_generator.state = state
