"""metrolab: distributed-training traffic emulator and RDMA test harness for metropolitan-area
networks. The Python API (docs/api.md):

    import metrolab
    result = metrolab.run("load-balancing", quick=True)
    print(result.status)          # pass | fail | inconclusive
    result.rows                   # pandas DataFrame, one row per workload, point and block

One import package: the repository's harness/, netem/, workloads/ and reports/ folders are its
subpackages (metrolab.harness, metrolab.netem, ...); nothing else lands at the top of
site-packages. Importing a subpackage runs this file first, so it stays light: the API module
imports only settings and errors at its top, and the version is read when asked.
"""

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


def __getattr__(name: str) -> str:
    if name == "__version__":  # the release and the commit (metrolab.harness.version): a git call, when asked
        from metrolab.harness.version import version
        return version()
    raise AttributeError(name)
