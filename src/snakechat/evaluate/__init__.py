"""Evaluation: CORE over a DCLM-layout bundle, bits per byte, the chat tasks and their scoring, and the
sandbox model-written code runs in."""
