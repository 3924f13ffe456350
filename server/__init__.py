"""The OpenAI Realtime protocol (sans-I/O session) and the websocket server."""
