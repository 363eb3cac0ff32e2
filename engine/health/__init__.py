"""Health checks: the pure rules and the prober that runs them."""
