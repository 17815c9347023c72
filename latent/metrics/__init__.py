"""Objective quality, diversity and originality metrics."""
