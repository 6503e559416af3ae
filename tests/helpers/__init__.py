"""Test helpers shared by several test suites (tiny checkpoints in every real GLM layout)."""
