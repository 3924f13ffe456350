"""Speech recognition backends and the streaming (stable-prefix) policy."""
