"""RDMA: Soft-RoCE devices, perftest runs, and (issue 4) the pyverbs layer."""
