"""The plugin registers the listener everywhere and builds the UI app only where Airflow asks for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_loading_the_plugin_does_not_import_fastapi_until_the_ui_is_read():
    """Task processes load the plugin for its listener: FastAPI stays unimported until fastapi_apps is read."""
    script = textwrap.dedent(
        """
        import sys
        from tasklens.plugin import TasklensPlugin
        before = "fastapi" in sys.modules
        apps = TasklensPlugin.fastapi_apps
        views = TasklensPlugin().external_views
        print(before, len(apps), apps[0]["url_prefix"], sorted(v["destination"] for v in views))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False 1 /tasklens ['nav', 'task_instance']"


def test_plugin_registers_the_listener_module():
    """The listener module is what makes every DAG observable with no DAG changes."""
    from tasklens import listener
    from tasklens.plugin import TasklensPlugin

    assert TasklensPlugin.name == "tasklens"
    assert TasklensPlugin.listeners == [listener]
