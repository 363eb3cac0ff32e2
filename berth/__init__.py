"""berth's composition root: the ``berth`` command line and the embedded daemon.

The arrows go one way, from here into ``bus`` (the wire) and ``workers`` (the process),
and from those into ``engine`` (the application core). Nothing below imports this package.
"""
