"""berth's image store: an OCI image layout, layers unpacked once, overlay root filesystems.

``reference`` parses image names, ``layout`` reads and writes the OCI layout (every
blob checked against its digest), ``unpack`` turns a layer into a directory overlayfs
can use (inside that directory, never through a host path), ``early`` does it while
skopeo still downloads, ``limits`` bounds what an image may take, ``archive`` reads
what an archive to load holds, ``config`` applies an image's configuration to a run
spec (pure), and ``store`` puts them together for the worker. Copies to and from
registries and archives go through ``skopeo`` (``engine.images.skopeo``), mounts
through ``engine.images.overlay``.
"""
