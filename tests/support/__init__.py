"""Test helpers (topologies, lab builders, kernel read-back), like pyroute2's pr2test."""
