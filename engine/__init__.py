"""berth's domain: events, the event store, the projection and the OCI runtime."""
