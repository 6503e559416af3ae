"""Pydantic request/response models only: openai.py, openai_misc.py, legacy.py, errors.py."""
