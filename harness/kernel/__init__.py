"""The bottom layer: what the kernel gives every layer above (entering network namespaces, their
netlink handles). With metrolab.harness.settings, metrolab.harness.errors and metrolab.harness.kernel.sh it imports nothing else of
metrolab, so `netem` and the lab both stand on it (tests/test_layers_unit.py)."""
