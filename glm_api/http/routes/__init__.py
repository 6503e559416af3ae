"""One router per family: openai.py (/v1/...), legacy.py (the original GLM API), web.py."""
