"""metrolab: distributed-training traffic emulator and RDMA test harness for metropolitan-area
networks. The Python API (docs/api.md):

    import metrolab
    result = metrolab.run("load-balancing", quick=True)
    print(result.status)          # pass | fail | inconclusive
    result.rows                   # pandas DataFrame, one row per workload, point and block
"""

from harness import __version__
from metrolab.api import (
                          MAIN_SCENARIO,
                          RunResult,
                          build_lab,
                          capabilities,
                          lab,
                          load_run,
                          load_scenario,
                          report,
                          run,
                          run_workload,
                          scenarios,
                          soak,
                          whitepaper_docs,
)

__all__ = ["MAIN_SCENARIO", "RunResult", "__version__", "build_lab", "capabilities", "lab", "load_run",
           "load_scenario", "report", "run", "run_workload", "scenarios", "soak", "whitepaper_docs"]
