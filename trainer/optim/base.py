"""The base of every schedule: its parameters declared once, by its constructor.

:func:`constructor_params` reads them from the signature; :class:`Schedule`
derives ``get_config()`` from them. The built-in formulas
(``trainer.optim.schedules``) and a user's function tabulated for the run
(``trainer.optim.function_schedules``) both stand on it.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import keras

LearningRateSchedule = keras.optimizers.schedules.LearningRateSchedule


def constructor_params(cls: type) -> dict[str, Any]:
    """The parameters ``cls(...)`` takes by name, ``learning_rate`` included, in order.

    Each maps to its default, or ``inspect.Parameter.empty`` when it is
    required; ``*args`` and ``**kwargs`` are not named parameters and are left
    out. This is the one declaration of a schedule's parameters.

    >>> from trainer.optim.schedules import StepSchedule
    >>> constructor_params(StepSchedule)["factor"]
    0.1
    >>> list(constructor_params(StepSchedule))
    ['learning_rate', 'every_steps', 'factor']
    """
    return {
        param.name: param.default
        for param in inspect.signature(cls).parameters.values()
        if param.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


class Schedule(LearningRateSchedule):
    """A schedule whose parameters are declared once, by its constructor.

    ``get_config()`` returns every parameter of ``__init__`` (``learning_rate``
    first, in the signature's order), read from the attribute of the same
    name, so the constructor must store each parameter under its own name
    (a list as a list). ``cls(**schedule.get_config())`` then rebuilds it.

    ``run_length_params``: the duration parameters that default to the rest
    of the run after warmup when the user leaves them unset.
    """

    run_length_params: ClassVar[tuple[str, ...]] = ()

    def get_config(self) -> dict[str, Any]:
        config = {}
        for param in constructor_params(type(self)):
            try:
                value = getattr(self, param)
            except AttributeError:
                raise TypeError(
                    f"{type(self).__name__} stores no attribute {param!r}: a Schedule keeps "
                    "each constructor parameter under its own name for get_config()"
                ) from None
            config[param] = list(value) if isinstance(value, list) else value
        return config
