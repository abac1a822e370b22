"""Evaluation: protocols and figures computed from real runs."""
