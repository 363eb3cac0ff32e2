"""docker-py's second set of container calls against a real engine: archives in and
out (berth cp's copy, inside the container's root), stats, update, prune, anonymous
volumes and inspect's Mounts, list filters, kill answered once stopped."""

from __future__ import annotations

import io
import tarfile
import uuid

import docker
import docker.errors
import pytest

from tests.dockerapi.conftest import Api


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o640
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_put_get_head(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    box = client.containers.run(busybox, ["sleep", "300"], detach=True)
    try:
        # a directory's contents: several top-level entries land in /tmp
        assert box.put_archive("/tmp", _tar({"a.txt": b"alpha", "b.txt": b"beta!"}))
        assert box.exec_run(["cat", "/tmp/a.txt", "/tmp/b.txt"]).output == b"alphabeta!"
        stream, stat = box.get_archive("/tmp/b.txt")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.next()
            assert member is not None and member.name == "b.txt"
            reader = archive.extractfile(member)
            assert reader is not None and reader.read() == b"beta!"
        assert stat["name"] == "b.txt" and stat["size"] == 5
        assert stat["mode"] & 0o777 == 0o640
        head = client.api.head(client.api._url("/containers/{0}/archive", box.id),
                               params={"path": "/tmp"})
        assert head.status_code == 200 and "X-Docker-Container-Path-Stat" in head.headers
        _s, dstat = box.get_archive("/tmp")
        assert dstat["mode"] & (1 << 31)  # Go's FileMode: a directory
        with pytest.raises(docker.errors.NotFound):
            box.get_archive("/no/such/file")
        # a name climbing out of the destination is refused by the copy, nothing written
        with pytest.raises(docker.errors.APIError) as climb:
            box.put_archive("/tmp", _tar({"../../escape.txt": b"x"}))
        assert climb.value.status_code == 400
        with pytest.raises(docker.errors.APIError) as junk:
            box.put_archive("/tmp", b"not a tar at all" * 64)
        assert junk.value.status_code == 400
    finally:
        box.remove(force=True)


def test_stats_update_kill_and_prune(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    box = client.containers.run(busybox, ["sleep", "300"], detach=True)
    done = client.containers.run(busybox, ["true"], detach=True)
    done.wait()
    try:
        one = box.stats(stream=False)
        assert one["pids_stats"]["current"] >= 1 and one["memory_stats"]["usage"] > 0
        assert one["cpu_stats"]["system_cpu_usage"] > 0 and one["name"] == f"/{box.name}"
        stream = box.stats(stream=True, decode=True)
        first, second = next(stream), next(stream)
        assert second["precpu_stats"] == first["cpu_stats"]
        stream.close()
        box.update(mem_limit="64m", restart_policy={"Name": "on-failure",
                                                    "MaximumRetryCount": 2})
        box.reload()
        assert box.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert box.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                            "MaximumRetryCount": 2}
        with pytest.raises(docker.errors.APIError) as refused:
            box.update(cpu_shares=512)
        assert refused.value.status_code == 400
        box.kill()  # answered once it stopped
        box.reload()
        assert box.status == "exited"
        pruned = client.containers.prune()
        assert done.id in pruned["ContainersDeleted"] and box.id in pruned["ContainersDeleted"]
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(done.id)
    finally:
        for c in (box, done):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
    with api.engine.store() as store:
        actors = {r.metadata.actor for r in store.read_all()
                  if r.type in ("container.updated", "container.removed")}
    assert actors and all(a.startswith("docker-api uid=") for a in actors), actors


def test_anonymous_volumes_mounts_and_filters(api: Api, busybox: str, tmp_path: object) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    named = f"dv{uuid.uuid4().hex[:8]}"
    box = client.containers.create(busybox, ["sh", "-c", "echo kept > /anon/f"],
                                   volumes={named: {"bind": "/named", "mode": "ro"},
                                            str(tmp_path): {"bind": "/host", "mode": "rw"}})
    anon_box = client.api.create_container(busybox, ["sh", "-c", "echo kept > /anon/f"],
                                           volumes=["/anon"])
    try:
        mounts = {m["Destination"]: m for m in box.attrs["Mounts"]}
        assert mounts["/named"]["Type"] == "volume" and mounts["/named"]["Name"] == named
        assert mounts["/named"]["RW"] is False and mounts["/named"]["Source"].endswith("_data")
        assert mounts["/host"] == {"Type": "bind", "Source": str(tmp_path),
                                   "Destination": "/host", "Mode": "", "RW": True,
                                   "Propagation": "rprivate"}
        client.api.start(anon_box)
        assert client.api.wait(anon_box)["StatusCode"] == 0
        anon = [m for m in client.api.inspect_container(anon_box)["Mounts"]
                if m["Destination"] == "/anon"]
        assert len(anon) == 1 and len(anon[0]["Name"]) == 64
        assert anon[0]["Name"] in [v.name for v in client.volumes.list()]
        # list filters: a name is a substring, another is left out
        assert [v.name for v in client.volumes.list(filters={"name": named[2:]})] == [named]
        assert client.volumes.list(filters={"name": "no-such-volume-here"}) == []
        client.api.remove_container(anon_box, v=True)  # its anonymous volume goes with it
        assert anon[0]["Name"] not in [v.name for v in client.volumes.list()]
        with pytest.raises(docker.errors.APIError) as bad:
            client.api.create_container(busybox, volumes=["relative/path"])
        assert bad.value.status_code == 400
    finally:
        box.remove(force=True)
        try:
            client.api.remove_container(anon_box, force=True, v=True)
        except docker.errors.NotFound:
            pass
    pruned = client.volumes.prune()
    assert named in (pruned["VolumesDeleted"] or [])


def test_inspect_names_the_network_and_address(api: Api, busybox: str) -> None:
    import ipaddress
    import random

    client = api.client(version="1.41")
    client.images.pull(busybox)
    name = f"dn{uuid.uuid4().hex[:6]}"
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}.0/24"
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    net = client.networks.create(name, driver="bridge", ipam=ipam)
    box = client.containers.run(busybox, ["sleep", "300"], detach=True, network=name)
    try:
        # created (run's answer): named, no address yet, as in Docker
        assert box.attrs["NetworkSettings"]["Networks"][name]["IPAddress"] == ""
        box.reload()
        on = box.attrs["NetworkSettings"]["Networks"]
        assert list(on) == [name]
        assert ipaddress.ip_address(on[name]["IPAddress"]) in ipaddress.ip_network(subnet)
        assert on[name]["IPPrefixLen"] == 24 and on[name]["Gateway"]
        box.kill()
        box.reload()
        assert box.attrs["NetworkSettings"]["Networks"][name]["IPAddress"] == ""
        # an alias given at create (berth's --network-alias) is shown while it runs
        low = client.api
        aliased = low.create_container(
            busybox, ["sleep", "300"], host_config=low.create_host_config(network_mode=name),
            networking_config=low.create_networking_config(
                {name: low.create_endpoint_config(aliases=["dpy-alias"])}))
        low.start(aliased)
        shown = low.inspect_container(aliased)["NetworkSettings"]["Networks"][name]
        assert "dpy-alias" in shown["Aliases"] and shown["IPAddress"]
        low.remove_container(aliased, force=True)
        # no network: none listed
        alone = client.containers.create(busybox, ["true"], network_mode="none")
        assert alone.attrs["NetworkSettings"]["Networks"] == {}
        alone.remove()
    finally:
        box.remove(force=True)
        net.remove()
