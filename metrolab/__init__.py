"""metrolab: distributed-training traffic emulator and RDMA test harness for metropolitan-area
networks. The Python API (docs/api.md):

    import metrolab
    result = metrolab.run("load-balancing", quick=True)
    print(result.status)          # pass | fail | inconclusive
    result.rows                   # pandas DataFrame, one row per workload, point and block

One import package: the repository's harness/, netem/, workloads/ and reports/ folders are its
subpackages (metrolab.harness, metrolab.netem, ...); nothing else lands at the top of
site-packages. Importing a subpackage runs this file first, so it stays light: the API and the
version are read when first asked for.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what __getattr__ gives, typed
    from metrolab.api import (
        MAIN_SCENARIO,
        CollectivesTest,
        RdmaTest,
        RunResult,
        bench_collectives,
        bench_harness,
        bench_lab,
        bench_noise,
        bench_rdma,
        bench_sequential,
        bench_vm,
        build_lab,
        capabilities,
        collectives_test,
        gbn_experiment,
        lab,
        lab_clean,
        lab_down,
        lab_status,
        lab_up,
        labs,
        load_run,
        load_scenario,
        measure,
        probe_links,
        probed,
        rdma_test,
        report,
        run,
        run_workload,
        sandbox_down,
        sandbox_up,
        scenarios,
        soak,
        sonic_apply,
        sonic_config,
        sonic_diff,
        task_windows,
        tasks,
        testbed,
        testbed_check,
        testbed_clean,
        testbed_inventory,
        testbed_provision,
        testbed_ray_config,
        topology_plan,
        vm_prepare,
        vm_run,
        whitepaper_docs,
    )

__all__ = ["MAIN_SCENARIO", "CollectivesTest", "RdmaTest", "RunResult", "__version__", "bench_collectives",
           "bench_harness", "bench_lab", "bench_noise", "bench_rdma", "bench_sequential", "bench_vm",
           "build_lab", "capabilities", "collectives_test", "gbn_experiment", "lab", "lab_clean", "lab_down",
           "lab_status", "lab_up", "labs", "load_run", "load_scenario", "measure", "probe_links", "probed",
           "rdma_test", "report", "run", "run_workload", "sandbox_down", "sandbox_up", "scenarios", "soak",
           "sonic_apply", "sonic_config", "sonic_diff", "task_windows", "tasks", "testbed", "testbed_check",
           "testbed_clean", "testbed_inventory", "testbed_provision", "testbed_ray_config", "topology_plan",
           "vm_prepare", "vm_run", "whitepaper_docs"]


def __getattr__(name: str):
    if name == "__version__":  # the release and the commit (metrolab.harness.version), read when asked
        from metrolab.harness.version import version  # deferred: a file read, when asked
        return version()
    if name in __all__:  # deferred on purpose: every subpackage import (a rank, the ssh agent) runs this file
        import metrolab.api  # deferred: every subpackage import (a rank, the ssh agent) runs this file; the API stands on all of them
        return getattr(metrolab.api, name)
    raise AttributeError(name)
