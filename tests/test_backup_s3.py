"""An S3 repository, for real: pgBackRest archives and backs up to moto's S3 server on
127.0.0.1 and a point-in-time restore reads everything back from the bucket.

pgBackRest speaks S3 over TLS only. moto's own TLS (werkzeug) ends connections without a TLS
close_notify, which OpenSSL 3 in pgBackRest rejects ("unexpected eof while reading"), so moto
serves plain HTTP behind nginx terminating TLS with a throwaway self-signed certificate, as an
S3-compatible store usually sits behind a proxy (the config sets `verifyTls: false`)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Iterator

import pytest

from components.backup.settings import BackupConfig, S3Repository
from infra.cli.pgbackrest import parse_info
from infra.cli.restore import restore
from tests.backup_harness import LocalCluster, S3CloneCluster, cluster, empty_node
from tests.servers import free_port, process, require_module, require_tool, scratch_dir
from tests.test_backup_restore import archive_everything, rows, server_now, take_backup, write

# The proxy's certificate is self-signed on purpose (verifyTls: false); boto3 would warn.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
BUCKET = "coderz-backups"
KEYS = {"PGBACKREST_REPO1_S3_KEY": "test-access-key", "PGBACKREST_REPO1_S3_KEY_SECRET": "test-secret-key"}


NGINX_CONF = """
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {prefix}/cert.pem;
        ssl_certificate_key {prefix}/key.pem;
        client_max_body_size 0;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
"""


@contextlib.contextmanager
def moto_s3() -> Iterator[tuple[int, object]]:
    """moto's S3 server behind TLS on free loopback ports, with one bucket; yields the TLS port
    and a boto3 client."""
    require_module("moto")
    boto3 = require_module("boto3")
    nginx = require_tool("nginx")
    prefix = scratch_dir("moto-")
    (prefix / "tmp").mkdir(mode=0o777)
    (prefix / "tmp").chmod(0o777)  # nginx workers run as another user
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(prefix / "key.pem"), "-out", str(prefix / "cert.pem")],
                   check=True, capture_output=True)
    upstream, port = free_port(), free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=port, upstream=upstream))
    server = Path(sys.executable).with_name("moto_server")
    try:
        with process([str(server), "-H", "127.0.0.1", "-p", str(upstream)], port=upstream, log=prefix / "moto.log",
                     timeout=30), \
             process([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], port=port, log=prefix / "nginx.log"):
            s3 = boto3.client("s3", endpoint_url=f"https://127.0.0.1:{port}", verify=False, region_name="us-east-1",
                              aws_access_key_id=KEYS["PGBACKREST_REPO1_S3_KEY"],
                              aws_secret_access_key=KEYS["PGBACKREST_REPO1_S3_KEY_SECRET"])
            s3.create_bucket(Bucket=BUCKET)
            yield port, s3
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def test_backup_to_s3_and_restore_to_t_from_the_bucket():
    with moto_s3() as (port, s3):
        config = BackupConfig(enabled=True, s3=S3Repository(
            endpoint=f"127.0.0.1:{port}", bucket=BUCKET, region="us-east-1", uri_style="path", verify_tls=False))
        with cluster(config, environment=dict(KEYS)) as node:
            assert not any(Path(node.paths.repo).iterdir()), "nothing goes to the local folder"
            node.sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
            write(node, "a1")
            take_backup(node)
            time.sleep(1.1)
            write(node, "b1")
            time.sleep(0.05)
            moment = server_now(node)
            write(node, "c1")
            archive_everything(node)
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="coderz/test/")["Contents"]]
            assert any(k.startswith("coderz/test/backup/main/") for k in keys)
            assert any(k.startswith("coderz/test/archive/main/") and k.endswith(".lz4") for k in keys)
            with empty_node(node) as clone:
                assert restore("test", node, clone, moment) == 0
                assert rows(clone) == ["a1", "b1"]


def test_a_clone_restored_from_its_sources_path_archives_and_backs_up_into_its_own():
    """`restore SOURCE --time T --into NEW` with both repositories in one bucket: NEW holds
    exactly the rows up to T, then archives and backs up into its own path (a new stanza: the old
    one was its earlier cluster's), and SOURCE's path gains nothing from NEW."""
    with moto_s3() as (port, s3):
        def config(path: str) -> BackupConfig:
            return BackupConfig(enabled=True, s3=S3Repository(
                endpoint=f"127.0.0.1:{port}", bucket=BUCKET, region="us-east-1", uri_style="path", verify_tls=False,
                path=path))

        with cluster(config("/coderz/src"), environment=dict(KEYS)) as source, \
             cluster(config("/coderz/clone"), kind=S3CloneCluster, source_path="/coderz/src",
                     environment=dict(KEYS)) as clone:
            own = partial(LocalCluster.pgbackrest, clone)  # the clone's own path, as its sidecar runs it
            clone.sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
            write(clone, "old-clone")
            own("--type=full", "backup")
            (earlier,) = parse_info(own("--output=json", "info"))[0]
            source.sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
            write(source, "a1")
            take_backup(source)
            time.sleep(1.1)
            write(source, "b1")
            time.sleep(0.05)
            moment = server_now(source)
            write(source, "c1")
            archive_everything(source)
            source_info = parse_info(source.pgbackrest("--output=json", "info"))[0]
            source_keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="coderz/src/")["Contents"]}

            assert restore("src", source, clone, moment) == 0
            assert rows(clone) == ["a1", "b1"]
            # pgBackRest wrote the source's path into restore_command: recovery read the source's WAL.
            auto = (Path(clone.paths.pg_data) / "postgresql.auto.conf").read_text()
            assert "--repo1-path=/coderz/src" in auto and "archive-get" in auto
            backups, _, newest = parse_info(own("--output=json", "info"))
            assert [b.kind for b in backups] == ["full"] and backups[0].label != earlier.label
            assert newest.startswith("00000002"), "the clone archives its own timeline into its own path"
            write(clone, "z1")
            own("check")  # a new WAL segment after promotion reaches the clone's path
            own("--type=incr", "backup")
            assert [b.kind for b in parse_info(own("--output=json", "info"))[0]] == ["incr", "full"]

            assert parse_info(source.pgbackrest("--output=json", "info"))[0] == source_info
            after = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="coderz/src/")["Contents"]}
            assert source_keys <= after and all("/00000001" in k for k in after - source_keys), \
                "only the source's own timeline-1 WAL may have been added"
