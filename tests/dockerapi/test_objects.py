"""Images, networks and volumes through docker-py: list, inspect, create, remove,
each a recorded command."""

from __future__ import annotations

import random
import uuid

import docker
import docker.errors
import pytest

from tests.dockerapi.conftest import Api


def test_images_pull_list_inspect_tag_remove(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    # the pull's progress is Docker's JSON stream, ending with the status line
    progress = list(client.api.pull(busybox, stream=True, decode=True))
    assert progress[-1]["status"].startswith("Status: Downloaded newer image for ")
    image = client.images.get(busybox)
    assert image.id.startswith("sha256:") and busybox in image.tags
    assert image.attrs["Config"]["Cmd"] == ["sh"] and image.attrs["Os"] == "linux"
    assert [i.id for i in client.images.list()] == [image.id]
    target = f"berth-test/tagged{uuid.uuid4().hex[:6]}"
    assert image.tag(target, "v2") is True
    assert f"{target}:v2" in client.images.get(image.id).tags or \
        client.images.get(f"{target}:v2").id == image.id
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("no-such/image:here")
    client.images.remove(f"{target}:v2")
    client.images.remove(busybox)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(busybox)
    with api.engine.store() as store:
        actors = {r.metadata.actor for r in store.read_all() if r.type.startswith("image.")}
    assert actors and all(a.startswith("docker-api uid=") for a in actors), actors


def test_networks_create_inspect_list_remove(api: Api) -> None:
    client = api.client(version="1.41")
    name = f"dnet{uuid.uuid4().hex[:6]}"
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}.0/24"
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    net = client.networks.create(name, driver="bridge", ipam=ipam)
    got = client.networks.get(name)
    assert got.name == name and got.attrs["IPAM"]["Config"][0]["Subnet"] == subnet
    assert name in [n.name for n in client.networks.list()]
    with pytest.raises(docker.errors.APIError) as clash:
        client.networks.create(name)
    assert clash.value.status_code == 409
    with pytest.raises(docker.errors.APIError) as driver:
        client.networks.create(f"{name}x", driver="overlay")
    assert driver.value.status_code == 400
    net.remove()
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(name)


def test_volumes_create_inspect_list_remove(api: Api) -> None:
    client = api.client(version="1.41")
    name = f"dvol{uuid.uuid4().hex[:6]}"
    vol = client.volumes.create(name, labels={"k": "v"})
    assert vol.name == name and vol.attrs["Labels"] == {"k": "v"}
    assert client.volumes.get(name).attrs["Mountpoint"]
    assert name in [v.name for v in client.volumes.list()]
    # creating it again is Docker's no-op
    assert client.volumes.create(name).name == name
    with pytest.raises(docker.errors.APIError) as bad:
        client.volumes.create(f"{name}x", driver="nfs")
    assert bad.value.status_code == 400
    vol.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(name)
    # gone and forced: no error (docker-py's remove_volume drops its force parameter)
    url = client.api._url("/volumes/{0}", name)
    assert client.api.delete(url, params={"force": 1}).status_code == 204
    assert client.api.delete(url).status_code == 404
