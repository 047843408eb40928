"""Drop-in registration of the tasklens plugin (Airflow's plugins/ folder).

When tasklens is also pip-installed, its ``airflow.plugins`` entry point registers the plugin;
exposing it here too would register the name twice, and Airflow's loader stops at a duplicate.
"""

from __future__ import annotations

from importlib.metadata import entry_points

if not any(ep.name == "tasklens" for ep in entry_points(group="airflow.plugins")):
    from tasklens.plugin import TasklensPlugin

    __all__ = ["TasklensPlugin"]
