"""Sharing through DVC remotes: repro, `dvc push`, a fresh `git clone`, `dvc pull`, and then
`dvc repro` has nothing to do. Once with a folder remote, once over SSH to a real sshd that the
test starts on 127.0.0.1 (skipped, with the reason, where sshd cannot start), once to an S3 API
(moto's server mode) on 127.0.0.1, with credentials from the environment only.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stages.core.params import merged
from tests.pipeline_project import TINY, Project
from tests.tiny_models import jpeg_bytes, lesion_photo

pytestmark = pytest.mark.slow

SHARED = merged(TINY, {"backbones": ["small_cnn"]})


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Project:
    """One tiny pipeline, reproduced and committed, that both round trips push from."""
    project = Project.copy_of_repo(tmp_path_factory.mktemp("origin"), SHARED)
    project.dvc("repro")
    project.git("add", "-A")
    project.git("commit", "-qm", "repro")
    return project


def round_trip(origin: Project, url: str, dest: Path,
               configure: Callable[[Project], None] = lambda project: None,
               name: str = "shared") -> Project:
    """Push origin's outputs to `url` (remote `name`, made the default), clone origin into
    dest, pull there; the clone."""
    origin.dvc("remote", "add", "--force", "--default", name, url)
    configure(origin)  # machine-local settings (keys) go to .dvc/config.local, not to git
    origin.git("add", ".dvc/config")
    origin.git("commit", "-qm", f"remote {url}")
    pushed = origin.dvc("push").stdout
    assert "pushed" in pushed, pushed

    subprocess.run(["git", "clone", "-q", str(origin.root), str(dest)], check=True,
                   env=origin.env())
    clone = Project(dest)
    assert not (dest / "models/small_cnn/holdout/model.keras").exists()  # git has no DVC outputs
    assert not (dest / "data/raw").exists()
    configure(clone)
    clone.dvc("pull")
    return clone


def assert_nothing_to_do(clone: Project) -> None:
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout
    repro = clone.dvc("repro").stdout
    assert clone.stages_run(repro) == set(), repro
    for path in ("data/raw/metadata.csv", "data/interim/split.csv",
                 "models/small_cnn/holdout/model.keras",
                 "metrics/backbones/small_cnn/holdout.json"):
        assert (clone.root / path).is_file(), path
    assert list((clone.root / "data/processed/prepared").glob("train-*.npz"))


def test_folder_remote_round_trip(origin, tmp_path):
    clone = round_trip(origin, str(tmp_path / "dvc-store"), tmp_path / "clone")
    assert_nothing_to_do(clone)

    # DVC's model registry: a version registered (GTO's git tag, what `gto register` writes),
    # then the served model fetched by name from the repository alone, and run by predict.
    origin.git("tag", "-a", "skin-lesion-classifier@v1.0.0", "-m", "Registering version")
    fetched = tmp_path / "registry"
    clone.run(str(Path(sys.executable).parent / "dvc"), "artifacts", "get", str(origin.root),
              "skin-lesion-classifier", "-o", str(fetched))
    assert {"model.keras", "model.json", "model.tflite"} <= {p.name for p in fetched.iterdir()}
    photo = tmp_path / "lesion.jpg"
    photo.write_bytes(jpeg_bytes(lesion_photo(80)))
    predicted = clone.run(sys.executable, "-m", "stages.app.predict", str(photo),
                          "--model", str(fetched), "--format", "json").stdout
    row = json.loads(predicted)["predictions"][0]
    assert row["predicted"] in ("benign", "malignant") and "refer" in row


# ---------------------------------------------------------------- SSH


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture
def sshd(tmp_path) -> Iterator[tuple[str, int, Path]]:
    """A real sshd on 127.0.0.1:<free port>, key-only, for this user: (user, port, key)."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(binary).is_file() or not shutil.which("ssh-keygen"):
        pytest.skip("sshd or ssh-keygen not installed (apt-get install openssh-server)")
    folder = tmp_path / "sshd"
    folder.mkdir()
    _keygen(folder / "host_key")
    _keygen(folder / "client_key")
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = _free_port()
    (folder / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {folder / "host_key"}
AuthorizedKeysFile {folder / "authorized_keys"}
PidFile {folder / "sshd.pid"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    if os.geteuid() == 0:
        # sshd as root needs its privilege-separation folder (the service unit creates it).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (folder / "sshd.log").open("w")
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(folder / "sshd_config")],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.skip(f"sshd could not start: {(folder / 'sshd.log').read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip(f"sshd not listening on port {port} after 10 s")
                time.sleep(0.1)
        yield getpass.getuser(), port, folder / "client_key"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_ssh_remote_round_trip(origin, sshd, tmp_path):
    user, port, key = sshd
    store = tmp_path / "ssh-store"
    store.mkdir()
    # Key-only login works at all (a clearer failure than DVC's if it does not).
    subprocess.run(["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    f"{user}@127.0.0.1", "true"], check=True, capture_output=True, timeout=30)

    def use_key(project: Project) -> None:
        project.dvc("remote", "modify", "--local", "shared", "keyfile", str(key))

    clone = round_trip(origin, f"ssh://{user}@127.0.0.1:{port}{store}", tmp_path / "clone",
                       use_key)
    assert any(store.rglob("*")), "nothing arrived on the SSH side"
    assert_nothing_to_do(clone)
    assert "keyfile" not in (clone.root / ".dvc/config").read_text()  # the key stays local


# ---------------------------------------------------------------- S3


@pytest.fixture
def s3_server(monkeypatch) -> Iterator[str]:
    """An S3 API (moto's server mode) on 127.0.0.1:<free port> with one bucket; its URL.

    Credentials come only from the environment, as a team's CI or a user's shell gives them.
    """
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    for key, value in (("AWS_ACCESS_KEY_ID", "test-key"), ("AWS_SECRET_ACCESS_KEY", "test-secret"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="lesions")
    yield url
    server.stop()


def test_s3_remote_round_trip(origin, s3_server, tmp_path):
    def use_endpoint(project: Project) -> None:
        # Where the store is goes to .dvc/config.local; the keys come from the environment.
        project.dvc("remote", "modify", "--local", "s3store", "endpointurl", s3_server)

    # Its own remote name: the SSH test left a keyfile for `shared` in .dvc/config.local.
    clone = round_trip(origin, "s3://lesions/dvc-store", tmp_path / "clone", use_endpoint,
                       name="s3store")
    import boto3

    listed = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="lesions")
    assert listed.get("KeyCount", 0) > 0, "nothing arrived in the bucket"
    assert_nothing_to_do(clone)
    for project in (origin, clone):
        config = (project.root / ".dvc/config").read_text()
        assert "s3://lesions/dvc-store" in config
        for secret in ("test-key", "test-secret", "access_key", "secret", "endpointurl"):
            assert secret not in config, f"{secret} in the committed .dvc/config"
