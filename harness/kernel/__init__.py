"""The bottom layer: what the kernel gives every layer above (entering network namespaces, their
netlink handles, starting a group of processes in them: launch). With metrolab.harness.settings,
metrolab.harness.errors and metrolab.harness.kernel.sh it imports nothing else of metrolab, so
`netem` and the lab both stand on it (tests/test_layers.py)."""
