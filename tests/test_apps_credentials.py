"""Fetch credentials are the seeder's own: a remote over HTTP that needs a password, given by the
seeder's git credential helper, never reaches the database, any file of the seeder, or the
control channel; a URL with a password in it is refused before anything is sent."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from common.addr import Address
from common.errors import RemoteError, ShoalError
from common.tls import JoinServerTLS
from seeder.authority import identity_dir
from seeder.localfleet import LocalFleet
from tests.conftest import shoal
from tests.gitremote import make_remote

pytestmark = pytest.mark.integration

SECRET = "S3cretT0ken-4f1c"
HTTP_IP = "127.0.8.3"
PROXY_IP = "127.0.0.1"  # an address the seeder's certificate names (the proxy presents it)
HELPER = f"""#!/bin/sh
[ "$1" = get ] && printf 'username=deploy\\npassword={SECRET}\\n'
exit 0
"""


class AuthHandler(http.server.SimpleHTTPRequestHandler):
    """Git's dumb HTTP protocol: the repository's files, behind basic auth."""

    expected = "Basic " + base64.b64encode(f"deploy:{SECRET}".encode()).decode()

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_remote(root: Path) -> Iterator[str]:
    handler = functools.partial(AuthHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((HTTP_IP, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HTTP_IP}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def recording_proxy(
    fleet: LocalFleet, record: list[bytes], *, task_status: trio.TaskStatus[Address]
) -> None:
    """A proxy to the seeder's control port that ends the CLI's TLS (with the seeder's own
    certificate, which the test can read), dials the seeder with the admin credential, and keeps
    every decrypted byte both ways: what the control channel really carries."""
    assert fleet.control is not None
    target = fleet.control
    ident = identity_dir(fleet.seeder_dir)
    server_tls = JoinServerTLS(ident / "seeder.crt", ident / "seeder.key")
    listeners = await trio.open_tcp_listeners(0, host=PROXY_IP)

    async def handle(tcp: trio.SocketStream) -> None:
        client = await server_tls.accept(tcp)
        upstream = await trio.open_tcp_stream(target.host, target.port)
        server = await fleet.tls().connect(upstream, target.host)
        async with client, server, trio.open_nursery() as nursery:

            async def pump(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, ShoalError
                ):
                    while data := await a.receive_some(65536):
                        record.append(data)
                        await b.send_all(data)
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, server)
            nursery.start_soon(pump, server, client)

    task_status.started(Address(PROXY_IP, listeners[0].socket.getsockname()[1]))
    await trio.serve_listeners(handle, listeners)


async def test_the_credential_helper_secret_is_in_no_frame_and_no_file(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    await trio.to_thread.run_sync(make_remote, tmp_path / "git")  # served at .../remote.git
    helper = tmp_path / "helper.sh"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    gitconfig = tmp_path / "seeder-gitconfig"
    gitconfig.write_text(f"[credential]\n\thelper = {helper}\n")
    frames: list[bytes] = []
    with http_remote(tmp_path / "git") as base, trio.fail_after(180):
        await fleet.start_seeder(env={"GIT_CONFIG_GLOBAL": str(gitconfig)})
        assert fleet.control is not None
        async with trio.open_nursery() as nursery:
            proxy = await nursery.start(recording_proxy, fleet, frames)
            url = f"{base}/remote.git"

            def cli(*args: str) -> tuple[int, str, str]:
                out = shoal(proxy, *args, "--identity", str(fleet.credential))
                return out.returncode, out.stdout, out.stderr

            code, _, err = await trio.to_thread.run_sync(cli, "app", "add", "web", "--repo", url)
            assert code == 0, err
            code, out, err = await trio.to_thread.run_sync(
                cli, "release", "build", "web", "--ref", "main"
            )
            assert code == 0, err
            rid = out.strip().splitlines()[-1]
            for args in (("app", "show", "web"), ("app", "refs", "web"), ("release", "show", rid)):
                code, out, err = await trio.to_thread.run_sync(cli, *args, "--json")
                assert code == 0 and SECRET not in out, err
            seen = len(frames)
            assert seen and b"app.add" in b"".join(frames), (
                "the capture must see the requests (if the channel is encrypted, capture "
                "decoded messages instead)"
            )
            with_password = url.replace("http://", f"http://deploy:{SECRET}@")
            code, out, err = await trio.to_thread.run_sync(
                cli, "app", "add", "other", "--repo", with_password
            )
            assert code == 2 and "carries a password" in err and SECRET not in err
            assert len(frames) == seen, "refused before anything was sent"
            async with fleet.client() as client:  # a client that sends one anyway
                with pytest.raises(RemoteError) as refused:
                    await client.call("app.add", name="other", repo=with_password)
            assert "carries a password" in str(refused.value)
            assert SECRET not in str(refused.value)
            nursery.cancel_scope.cancel()
    assert SECRET.encode() not in b"".join(frames)
    seeder_files = [p for p in (fleet.root / "seeder").rglob("*") if p.is_file()]
    assert any(p.name == "seeder.db" for p in seeder_files)
    leaked = [p for p in [*seeder_files, fleet.root / "logs" / "seeder.log"]
              if SECRET.encode() in p.read_bytes()]  # fmt: skip
    assert leaked == []
