"""Workloads that run on lab hosts (collectives, training, inference); filled by later issues."""
