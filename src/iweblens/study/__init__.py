"""The pods x threads study: the runner, its results CSV, the replicas it scales, figure, report.

Talks to the replicas over HTTP only. The figure (matplotlib) and the report (reportlab) are in
``iweblens.study.plot`` and ``iweblens.study.report``, imported only by the commands that draw.
"""

from iweblens.study.experiment import Point, plan, run_experiment
from iweblens.study.results import append_result, read_results

__all__ = ["Point", "append_result", "plan", "read_results", "run_experiment"]
