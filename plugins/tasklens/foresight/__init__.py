"""Trouble before it lands: checks of what is still in flight, run by the api-server from Airflow's metadata DB.

* :mod:`.history`: expected durations from a task's successes (hour-of-week robust baseline or recent quantiles);
* :mod:`.overrun`: attempts running too long or stuck in queued / scheduled (pure);
* :mod:`.queries`: the metadata-DB reads (indexed, columns only);
* :mod:`.checks`: one pass, called from the reconciler (:mod:`tasklens.reconcile`).
"""

from __future__ import annotations
