"""``python -m hpo.execution``: a worker process started by hpo (settings from the
environment; see :mod:`hpo.execution._launch`)."""

from hpo.execution._launch import child_main

child_main()
