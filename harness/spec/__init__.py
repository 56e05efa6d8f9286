"""Specs: YAML in, validated typed models out."""
