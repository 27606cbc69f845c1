"""What a person sees: live progress, trial tables and JSON views, the thesis's reports,
and optuna-dashboard."""

from hpo.reporting._compare import compare_trials
from hpo.reporting._dashboard import (
                                      TOKEN_COOKIE,
                                      check_host,
                                      dashboard_token,
                                      is_loopback,
                                      make_dashboard_server,
                                      new_token,
                                      read_only,
                                      with_token,
)
from hpo.reporting._logs import quiet_backends, setup_logging
from hpo.reporting._output import drop_stream, flush_or_drop, write_or_drop
from hpo.reporting._progress import (
                                      Reporter,
                                      format_params,
                                      format_value,
                                      pareto_front_lines,
)
from hpo.reporting._report import FORMATS, Report, build_report, write_report
from hpo.reporting._views import (
                                      link_lines,
                                      linked_summary,
                                      origin,
                                      pair_best,
                                      study_status,
                                      study_summaries,
                                      to_json,
                                      trial_record,
                                      trials_csv,
                                      trials_table,
)

__all__ = [
    "compare_trials",
    "quiet_backends",
    "setup_logging",
    "write_or_drop",
    "drop_stream",
    "flush_or_drop",
    "Reporter",
    "format_params",
    "format_value",
    "pareto_front_lines",
    "trial_record",
    "trials_table",
    "trials_csv",
    "study_summaries",
    "study_status",
    "to_json",
    "link_lines",
    "linked_summary",
    "origin",
    "pair_best",
    "FORMATS",
    "Report",
    "build_report",
    "write_report",
    "read_only",
    "check_host",
    "make_dashboard_server",
    "dashboard_token",
    "with_token",
    "new_token",
    "is_loopback",
    "TOKEN_COOKIE",
]
