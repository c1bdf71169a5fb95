"""Serving: the OpenAI-compatible wire format, the Starlette app, checkpoint loading for serving and
the reply decoder chat_cli and chat_web share."""
