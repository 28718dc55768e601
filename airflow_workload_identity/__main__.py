"""``python -m airflow_workload_identity``: the diagnostics CLI."""

import sys

from airflow_workload_identity.cli import main

sys.exit(main())
