"""metrolab harness: specs, lab backends, runner, RDMA, policies and the CLI."""


def __getattr__(name: str) -> str:
    if name == "__version__":  # the release and the commit (harness.version), read when asked
        from harness.version import version
        return version()
    raise AttributeError(name)
