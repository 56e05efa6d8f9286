"""Real testbeds: the machines a topology's nodes and links map onto, and what is derived from
them (ansible inventory, Ray cluster config)."""
