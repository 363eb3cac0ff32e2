"""Named volumes: the pure rules, the service that records them, their files on disk."""
