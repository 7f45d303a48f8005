"""Runnable examples of durable workflows."""
