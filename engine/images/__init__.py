"""berth's image store: an OCI image layout, layers unpacked once, overlay root filesystems.

``reference`` parses image names, ``layout`` reads and writes the OCI layout (every
blob checked against its digest), ``unpack`` turns a layer into a directory overlayfs
can use, ``config`` applies an image's configuration to a run spec (pure), and
``store`` puts them together for the worker. Copies to and from registries and
archives go through ``skopeo`` (``engine.runtime.skopeo``), mounts through
``engine.runtime.overlay``.
"""
