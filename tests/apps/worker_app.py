"""A TaskManager for ``taskflow worker`` in the tests: runs the ``heavy`` queue."""

from __future__ import annotations

import os

from taskflow import TaskManager
from tests.apps import tasks

task_manager = TaskManager(database_url=os.environ["TASKFLOW_DATABASE_URL"], poll_interval=0.2)
task_manager.task(queue="heavy", name="crunch")(tasks.crunch)
