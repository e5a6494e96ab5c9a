"""Recipes, one module per source project; visionzoo/training/registry.py joins them into one table."""
