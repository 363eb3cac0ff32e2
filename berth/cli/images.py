"""Image commands: ``pull``, ``push``, ``images``, ``rmi``, ``tag`` and ``image``
(``ls``, ``inspect``, ``rm``, ``load``, ``import``, ``save``, ``prune``, ``pull``,
``push``, ``tag``), and the image side of ``run``/``create``. Each asks the worker
of the node, whose image store it is; files named here are paths on that node."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from berth.cli import format as fmt
from berth.cli.table import print_table
from bus.client import Client
from engine import command_types as t

if TYPE_CHECKING:
    from berth.cli import AddCommand

COMMANDS = ("pull", "push", "images", "rmi", "tag", "image")
PULL_POLICIES = ("missing", "always", "never")
LONG = 3600.0
"""Seconds a copy (pull, push, load, save) may take before the CLI stops waiting."""


def _send(client: Client, type: str, node: str | None = None, *, long: bool = False,
          label: str = "", quiet: bool = False, **args: Any) -> dict[str, Any]:
    command = client.command(type, None, node, {k: v for k, v in args.items()
                                                if v is not None})
    if not long:
        return dict(client.request(command).result)
    with fmt.Progress(label or type, stream=io.StringIO() if quiet else None):
        reply = client.request_patiently(command, time.monotonic() + LONG)
    return dict(reply.result)


def _auth(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"tls_verify": args.tls_verify != "false"}
    if args.authfile:
        out["authfile"] = os.path.abspath(args.authfile)
    if args.creds:
        out["creds"] = args.creds
    return out


# -- run / create -------------------------------------------------------------------


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pull", choices=PULL_POLICIES, default="missing",
                   help="pull the image: when missing (default), always, or never")
    _auth_options(p)


def image_spec(target: str, spec: dict[str, Any]) -> None:
    """``run``/``create``'s IMAGE|ROOTFS: a path that exists is a root filesystem
    directory; anything else names an image (but a word that starts like a path stays
    one, so a mistyped directory is reported as a missing directory)."""
    if os.path.exists(target) or target.startswith(("/", "./", "../")):
        return
    spec["rootfs"] = ""
    spec["image"] = target


def pull_for_run(client: Client, spec: dict[str, Any], args: argparse.Namespace) -> None:
    """``run``/``create`` IMAGE: pull it first unless ``--pull never``."""
    if not spec.get("image") or args.pull == "never":
        return
    _send(client, t.IMAGE_PULL, args.node, long=True, label=f"pulling {spec['image']}",
          quiet=bool(getattr(args, "quiet", False)),
          reference=spec["image"], missing_only=args.pull == "missing", **_auth(args))


# -- commands -----------------------------------------------------------------------


def cmd_pull(args: argparse.Namespace, client: Client) -> int:
    result = _send(client, t.IMAGE_PULL, args.node, long=True,
                   label=f"pulling {args.reference}", reference=args.reference, **_auth(args))
    print(result.get("image", {}).get("id", ""))  # a replayed pull has no summary
    return 0


def cmd_push(args: argparse.Namespace, client: Client) -> int:
    dest = args.destination or args.image
    result = _send(client, t.IMAGE_PUSH, args.node, long=True, label=f"pushing {dest}",
                   reference=args.image, destination=dest, **_auth(args))
    print(result.get("destination", dest))
    return 0


def image_view(image: dict[str, Any]) -> dict[str, Any]:
    """An image row under podman's template names (``{{.Repository}}``, ``{{.ID}}``...)
    as well as berth's own keys."""
    out = dict(image)
    full = str(image["id"]).removeprefix("sha256:")
    out.update(ID=full[:12], Id=full, Repository=image["repository"], Tag=image["tag"],
               Digest=image.get("digest"), Created=image["created"],
               CreatedAt=image["created"], Size=_size(int(image["size"])),
               VirtualSize=int(image["size"]), Names=[image["name"]] if image["name"] else [])
    return out


def cmd_images(args: argparse.Namespace, client: Client) -> int:
    """``--all`` is accepted with podman's meaning (intermediate images too): berth's
    store has no intermediate images, so every image is already listed."""
    images = _send(client, t.IMAGE_LIST, args.node)["images"]
    if args.format not in ("table", "json"):
        from berth.cli import template

        for line in template.parse(args.format).render_all(
                [image_view(i) for i in images]):
            print(line)
        return 0
    if args.format == "json":
        print(json.dumps(images, indent=2, sort_keys=True))
        return 0
    if args.quiet:
        for image in images:
            print(image["id"].removeprefix("sha256:")[:12])
        return 0
    rows = [] if args.noheading else [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    for image in images:
        rows.append([image["repository"], image["tag"],
                     image["id"].removeprefix("sha256:")[:12], image["created"][:19],
                     _size(int(image["size"]))])
    if not rows:
        return 0
    print_table(rows)
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.3g} {unit}" if unit != "B" else f"{n} B"
        value /= 1000
    return f"{n} B"


def cmd_inspect(args: argparse.Namespace, client: Client) -> int:
    found = [_send(client, t.IMAGE_INSPECT, args.node, reference=ref) for ref in args.images]
    print(json.dumps(found, indent=2, sort_keys=True))
    return 0


def cmd_exists(args: argparse.Namespace, client: Client) -> int:
    from berth.cli.exists import exists

    return exists(lambda: _send(client, t.IMAGE_INSPECT, args.node, reference=args.image))


def cmd_rmi(args: argparse.Namespace, client: Client) -> int:
    """``-a``: every image in the store, by id (each once, whatever its names)."""
    if args.all == bool(args.images):
        from engine.errors import InvalidArgument

        raise InvalidArgument("give images or --all, one of the two")
    references = list(args.images)
    if args.all:
        listed = _send(client, t.IMAGE_LIST, args.node)["images"]
        references = sorted({str(i["id"]) for i in listed})
        if not references:
            return 0
    result = _send(client, t.IMAGE_REMOVE, args.node, references=references,
                   force=bool(args.force))
    for image in result.get("removed", ()):
        print(f"Untagged: {image['name']}" if image["name"] else f"Deleted: {image['id']}")
    return 0


def cmd_tag(args: argparse.Namespace, client: Client) -> int:
    _send(client, t.IMAGE_TAG, args.node, reference=args.image, target=args.target)
    return 0


def cmd_load(args: argparse.Namespace, client: Client) -> int:
    result = _send(client, t.IMAGE_LOAD, args.node, long=True, label=f"loading {args.input}",
                   path=os.path.abspath(args.input))
    for image in result.get("images", ()):
        print(f"Loaded image: {image['name'] or image['id']}")
    return 0


def cmd_import(args: argparse.Namespace, client: Client) -> int:
    result = _send(client, t.IMAGE_IMPORT, args.node, long=True,
                   label=f"importing {args.tarball}", path=os.path.abspath(args.tarball),
                   reference=args.reference)
    print(result.get("image", {}).get("id", ""))
    return 0


def cmd_save(args: argparse.Namespace, client: Client) -> int:
    _send(client, t.IMAGE_SAVE, args.node, long=True, label=f"saving {args.image}",
          reference=args.image, path=os.path.abspath(args.output), format=args.format)
    return 0


def cmd_prune(args: argparse.Namespace, client: Client) -> int:
    result = _send(client, t.IMAGE_PRUNE, args.node)
    for image in result.get("removed", ()):
        print(image["id"])
    print(f"removed {result.get('blobs', 0)} blobs and {result.get('layers', 0)} layers",
          file=sys.stderr)
    return 0


def _auth_options(p: Any) -> None:
    p.add_argument("--authfile", metavar="FILE", help="auth.json to use (podman's format)")
    p.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry")
    p.add_argument("--tls-verify", choices=["true", "false"], default="true",
                   help="require HTTPS and verify certificates (default true)")


def _node(p: Any) -> None:
    p.add_argument("--node", help="whose image store (default: any worker's)")


def _pull(p: Any) -> None:
    _auth_options(p)
    _node(p)
    p.add_argument("reference", metavar="REF",
                   help="the image to pull (e.g. docker.io/library/busybox:latest)")


def _push(p: Any) -> None:
    _auth_options(p)
    _node(p)
    p.add_argument("image", metavar="IMAGE", help="the image in this node's store")
    p.add_argument("destination", metavar="REF", nargs="?",
                   help="where to push it (default: its own name)")


def _images(p: Any) -> None:
    _node(p)
    p.add_argument("--format", default="table",
                   help="table (default), json (one array) or a Go template such as "
                        "'{{.Repository}}:{{.Tag}} {{.ID}}'")
    p.add_argument("-q", "--quiet", action="store_true", help="print image ids only")
    p.add_argument("-a", "--all", action="store_true",
                   help="intermediate images too (berth keeps none: the same list)")
    p.add_argument("-n", "--noheading", action="store_true", help="no header row")


def _rmi(p: Any) -> None:
    _node(p)
    p.add_argument("-f", "--force", action="store_true",
                   help="remove even if a stopped container uses it")
    p.add_argument("-a", "--all", action="store_true", help="remove every image")
    p.add_argument("images", metavar="IMAGE", nargs="*", help="images to remove (names or ids)")


def _tag(p: Any) -> None:
    _node(p)
    p.add_argument("image", metavar="IMAGE", help="the image to name")
    p.add_argument("target", metavar="TARGET", help="its new name (NAME[:TAG])")


def add_commands(add: AddCommand) -> None:
    _pull(add("pull", cmd_pull, "pull an image from a registry"))
    _push(add("push", cmd_push, "push an image to a registry"))
    _images(add("images", cmd_images, "list images"))
    _rmi(add("rmi", cmd_rmi, "remove images"))
    _tag(add("tag", cmd_tag, "give an image another name"))
    p = add("image", None, "manage images")  # type: ignore[arg-type]
    sub = p.add_subparsers(dest="image_cmd", required=True, metavar="COMMAND")

    def sp(name: str, fn: Any, helptext: str) -> Any:
        q = sub.add_parser(name, help=helptext)
        q.set_defaults(fn=fn, server=False)
        return q

    _images(sp("ls", cmd_images, "list images"))
    q = sp("inspect", cmd_inspect, "images as JSON")
    _node(q)
    q.add_argument("images", metavar="IMAGE", nargs="+", help="images to show (names or ids)")
    _rmi(sp("rm", cmd_rmi, "remove images"))
    q = sp("exists", cmd_exists, "exit 0 if the image exists, 1 if not")
    _node(q)
    q.add_argument("image", metavar="IMAGE", help="the image (name or id)")
    _pull(sp("pull", cmd_pull, "pull an image from a registry"))
    _push(sp("push", cmd_push, "push an image to a registry"))
    _tag(sp("tag", cmd_tag, "give an image another name"))
    q = sp("load", cmd_load, "load images from a docker-archive or oci-archive")
    _node(q)
    q.add_argument("-i", "--input", required=True, metavar="FILE",
                   help="a docker-archive or oci-archive file on the node")
    q = sp("import", cmd_import, "make an image of a root filesystem tarball")
    _node(q)
    q.add_argument("tarball", metavar="TARBALL", help="a root filesystem tarball on the node")
    q.add_argument("reference", metavar="NAME[:TAG]", help="the image's name")
    q = sp("save", cmd_save, "write an image to an archive")
    _node(q)
    q.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the archive to write on the node")
    q.add_argument("--format", choices=["docker-archive", "oci-archive"],
                   default="docker-archive", help="the archive's format (default docker-archive)")
    q.add_argument("image", metavar="IMAGE", help="the image to save")
    q = sp("prune", cmd_prune, "remove untagged images and unreferenced blobs and layers")
    _node(q)
