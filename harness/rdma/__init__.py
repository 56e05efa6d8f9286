"""RDMA: Soft-RoCE devices, perftest runs, the pyverbs layer, rdma_cm, Go-Back-N."""
