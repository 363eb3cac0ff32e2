"""Networks: the pure rules, the service that records them, and the setup of a
container's network (namespace, CNI, host ports)."""
