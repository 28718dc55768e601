"""Airflow connections and hooks that use the pod's cloud workload identity; no stored secret.

Importing this package is cheap on purpose: Airflow's providers manager imports it in every CLI
command, scheduler, worker and api-server, so it holds the version and nothing else.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
