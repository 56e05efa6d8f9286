"""metrolab harness: specs, lab backends, runner, RDMA, policies and the CLI."""

__version__ = "0.1.0"
