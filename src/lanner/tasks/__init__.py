"""Tasks as plug-ins: each folder here is one task, registered by importing it below.

A new task is one folder (a :class:`~lanner.tasks.base.Task` subclass and its ``register_task``
call) plus one line in this import.
"""

from lanner.tasks import classify, detect, two_stage  # noqa: F401  (each registers its task)
from lanner.tasks.base import Prepared, Task, get_task, register_task, task_names

__all__ = ["Prepared", "Task", "get_task", "register_task", "task_names"]
