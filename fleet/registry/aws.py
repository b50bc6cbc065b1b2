"""The AWS backend: devices as AWS IoT things, camera credentials in Secrets Manager.

* one thing per device (attributes: site, serial, hardware, arch), in one
  thing group per site (``<group_prefix><site>``, default ``edgefleet-<site>``);
* the device certificate is registered (``RegisterCertificateWithoutCA``),
  attached to its thing and to a per-thing policy ``edgefleet-<thing>`` that
  allows only ``client/<thing>`` and the ``edgefleet/<thing>/*`` and
  ``$aws/things/<thing>/*`` topics;
* camera usernames and passwords live in ``<secret_prefix>cameras/<camera>``
  (default prefix ``edgefleet/``); the local cache keeps only the secret's ARN;
* the local SQLite database (``.fleet/registry.db``, a `SQLiteRegistry` held
  as ``cache``) answers every read. AWS is written first, then the cache, so
  the cache never claims what AWS does not have; camera imports undo their
  AWS writes when any of them fails.

``fleet.yaml``::

    registry: {backend: aws, region: eu-central-1, endpoint_url: http://127.0.0.1:5000}
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from fleet.errors import ConfigError, FleetError
from fleet.project import Project
from fleet.registry import Camera, RegisterResult
from fleet.registry import hosts as inventory_hosts
from fleet.registry.sqlite import SQLiteRegistry

SECRET_REF = "aws:"  # noqa: S105 (a prefix, not a secret)
MAX_THING_NAME = 128
WORKERS = 16


class AwsError(FleetError):
    """An AWS call failed; the message names the operation and the AWS error code."""


def _client_error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__))


def policy_document(
    region: str, account: str, thing: str, partition: str = "aws"
) -> dict[str, Any]:
    """The per-thing IoT policy: its own client id, its own topics, nothing else."""
    base = f"arn:{partition}:iot:{region}:{account}"
    topics = [f"edgefleet/{thing}/*", f"$aws/things/{thing}/*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{base}:client/{thing}"},
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [f"{base}:topic/{t}" for t in topics],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [f"{base}:topicfilter/{t}" for t in topics],
            },
        ],
    }


class AwsRegistry:
    """AWS IoT Core + Secrets Manager, with a SQLite cache (``cache``) for every read."""

    backend = "aws"

    def __init__(self, cache: SQLiteRegistry, config: Mapping[str, Any]) -> None:
        self.cache, self.known_hosts = cache, cache.known_hosts
        self.config = dict(config)
        self.group_prefix = str(config.get("group_prefix", "edgefleet-"))
        self.secret_prefix = str(config.get("secret_prefix", "edgefleet/"))
        self._clients: dict[str, Any] = {}

    @classmethod
    def open(
        cls,
        project: Project,
        config: Mapping[str, Any] | None = None,
        filename: str = "registry.db",
    ) -> AwsRegistry:
        config = dict(config or {})
        if not config.get("region"):
            raise ConfigError(
                "registry.backend aws needs a region",
                where="fleet.yaml: registry",
                fix="add `region: <aws region>` under registry",
            )
        return cls(SQLiteRegistry.open(project, filename), config)

    def close(self) -> None:
        self.cache.close()

    def __enter__(self) -> AwsRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.cache.conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction on the cache (AWS calls are not part of it)."""
        with self.cache.transaction() as conn:
            yield conn

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(
                service,
                region_name=self.config["region"],
                endpoint_url=self.config.get("endpoint_url") or None,
            )
        return self._clients[service]

    def _aws(self, what: str, call: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(**kwargs)
        except ClientError as exc:
            raise AwsError(
                f"AWS {what} failed: {_client_error_code(exc)}",
                where=f"region {self.config['region']}",
                fix="check the credentials, region and endpoint_url in fleet.yaml",
            ) from None
        except BotoCoreError as exc:
            raise AwsError(
                f"AWS {what} failed: {type(exc).__name__}",
                fix="check the credentials, region and endpoint_url in fleet.yaml",
            ) from None

    def _exists(self, call: Callable[..., Any], **kwargs: Any) -> bool:
        from botocore.exceptions import ClientError

        try:
            call(**kwargs)
            return True
        except ClientError as exc:
            if _client_error_code(exc) in ("ResourceNotFoundException", "NotFoundException"):
                return False
            raise

    # ---- things and groups -----------------------------------------------------------------

    def group_name(self, site: str) -> str:
        return f"{self.group_prefix}{site}"

    def policy_name(self, thing: str) -> str:
        return f"edgefleet-{thing}"

    def _sync_thing(self, name: str, fields: Mapping[str, Any]) -> str:
        """Create or update the thing and put it in its site's group; returns the thing ARN."""
        if len(name) > MAX_THING_NAME:
            raise ConfigError(
                f"device name '{name[:40]}...' is longer than {MAX_THING_NAME} "
                "characters, the AWS IoT thing name limit",
                fix="rename the device",
            )
        iot = self.client("iot")
        attributes = {
            k: str(fields[k]) for k in ("site", "serial", "hardware", "arch") if fields.get(k)
        }
        payload = {"attributes": attributes, "merge": True}
        if self._exists(iot.describe_thing, thingName=name):
            self._aws("UpdateThing", iot.update_thing, thingName=name, attributePayload=payload)
        else:
            self._aws("CreateThing", iot.create_thing, thingName=name, attributePayload=payload)
        if fields.get("site"):
            self._move_to_group(name, str(fields["site"]))
        return str(self._aws("DescribeThing", iot.describe_thing, thingName=name)["thingArn"])

    def _move_to_group(self, thing: str, site: str) -> None:
        iot, group = self.client("iot"), self.group_name(site)
        if not self._exists(iot.describe_thing_group, thingGroupName=group):
            self._aws("CreateThingGroup", iot.create_thing_group, thingGroupName=group)
        current = self._aws(
            "ListThingGroupsForThing", iot.list_thing_groups_for_thing, thingName=thing
        )["thingGroups"]
        for old in current:
            if old["groupName"] != group and old["groupName"].startswith(self.group_prefix):
                self._aws(
                    "RemoveThingFromThingGroup",
                    iot.remove_thing_from_thing_group,
                    thingGroupName=old["groupName"],
                    thingName=thing,
                )
        if all(g["groupName"] != group for g in current):
            self._aws(
                "AddThingToThingGroup",
                iot.add_thing_to_thing_group,
                thingGroupName=group,
                thingName=thing,
            )

    def upsert_device(self, name: str, **fields: Any) -> dict[str, Any]:
        row = self.cache.devices.row(name)
        merged = {**(row or {}), **fields}
        if {"site", "serial", "hardware", "arch"} & set(fields) or row is None:
            self._sync_thing(name, merged)
        return self.cache.upsert_device(name, **fields)

    def register_from_inventory(self, nornir_or_hosts: Any) -> RegisterResult:
        for name, fields in inventory_hosts.entries(nornir_or_hosts, self.known_hosts):
            self._sync_thing(name, fields)
        return self.cache.register_from_inventory(nornir_or_hosts)

    # ---- certificates and policies -------------------------------------------------------------

    def _register_certificate(self, cert_pem: str) -> str:
        from botocore.exceptions import ClientError

        iot = self.client("iot")
        try:
            return str(
                iot.register_certificate_without_ca(certificatePem=cert_pem, status="ACTIVE")[
                    "certificateArn"
                ]
            )
        except ClientError as exc:
            if _client_error_code(exc) != "ResourceAlreadyExistsException":
                raise AwsError(
                    f"AWS RegisterCertificateWithoutCA failed: {_client_error_code(exc)}",
                    fix="check the certificate and the AWS settings",
                ) from None
            arn = exc.response.get("resourceArn") or exc.response.get("Error", {}).get(
                "resourceArn"
            )
            if not arn:
                cert_id = exc.response.get("resourceId") or exc.response.get("Error", {}).get(
                    "resourceId"
                )
                arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"][
                    "certificateArn"
                ]
            return str(arn)

    def _ensure_policy(self, thing: str, thing_arn: str) -> str:
        iot, name = self.client("iot"), self.policy_name(thing)
        _, partition, _, region, account = thing_arn.split(":")[:5]
        if not self._exists(iot.get_policy, policyName=name):
            document = policy_document(region, account, thing, partition)
            self._aws(
                "CreatePolicy",
                iot.create_policy,
                policyName=name,
                policyDocument=json.dumps(document),
            )
        return name

    def set_device_certificate(self, name: str, cert_pem: str) -> dict[str, Any]:
        """Register the certificate in IoT, attach it to the thing and its own policy."""
        row = self.cache.devices.require(name)
        thing_arn = self._sync_thing(name, row)
        cert_arn = self._register_certificate(cert_pem)
        policy = self._ensure_policy(name, thing_arn)
        iot = self.client("iot")
        self._aws("AttachPolicy", iot.attach_policy, policyName=policy, target=cert_arn)
        self._aws(
            "AttachThingPrincipal", iot.attach_thing_principal, thingName=name, principal=cert_arn
        )
        out = self.cache.set_device_certificate(name, cert_pem)
        return {**out, "certificate_arn": cert_arn, "policy": policy}

    def deregister_device(self, name: str, *, remove_cameras: bool = False) -> dict[str, Any]:
        """Revoke the thing's certificates in IoT, delete its policy and thing, then the cache."""
        self.cache.devices.require(name)
        cameras = self.cache.list_cameras(devices=[name])
        refs = [self.cache.cameras.password_ref(c["name"]) for c in cameras]
        if refs and not remove_cameras:
            return self.cache.deregister_device(name, remove_cameras=False)  # refuses, says why
        self._retire_thing(name)
        self._delete_secrets([r for r in refs if r])
        return self.cache.deregister_device(name, remove_cameras=remove_cameras)

    def _retire_thing(self, name: str) -> None:
        iot, policy = self.client("iot"), self.policy_name(name)
        if not self._exists(iot.describe_thing, thingName=name):
            return
        principals = self._aws("ListThingPrincipals", iot.list_thing_principals, thingName=name)[
            "principals"
        ]
        for arn in principals:
            self._aws(
                "DetachThingPrincipal", iot.detach_thing_principal, thingName=name, principal=arn
            )
            if self._exists(iot.get_policy, policyName=policy):
                self._aws("DetachPolicy", iot.detach_policy, policyName=policy, target=arn)
            self._aws(
                "UpdateCertificate",
                iot.update_certificate,
                certificateId=arn.rsplit("/", 1)[-1],
                newStatus="REVOKED",
            )
        if self._exists(iot.get_policy, policyName=policy):
            self._aws("DeletePolicy", iot.delete_policy, policyName=policy)
        self._aws("DeleteThing", iot.delete_thing, thingName=name)

    # ---- camera secrets ---------------------------------------------------------------------

    def secret_name(self, camera: str) -> str:
        return f"{self.secret_prefix}cameras/{camera}"

    def _put_secret(self, cam: Camera) -> tuple[str, str | None]:
        """Create or overwrite the camera's secret: ``(arn, previous SecretString or None)``."""
        from botocore.exceptions import ClientError

        sm, name = self.client("secretsmanager"), self.secret_name(cam.name)
        value = json.dumps({"username": cam.username, "password": cam.password})
        try:
            arn = sm.create_secret(
                Name=name,
                SecretString=value,
                Tags=[{"Key": "edgefleet:device", "Value": cam.device}],
            )["ARN"]
            return str(arn), None
        except ClientError as exc:
            if _client_error_code(exc) != "ResourceExistsException":
                raise
        previous = sm.get_secret_value(SecretId=name)["SecretString"]
        arn = sm.put_secret_value(SecretId=name, SecretString=value)["ARN"]
        return str(arn), str(previous)

    def _undo_secrets(self, done: list[tuple[str, str | None]]) -> None:
        sm = self.client("secretsmanager")
        for arn, previous in done:
            if previous is None:
                sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
            else:
                sm.put_secret_value(SecretId=arn, SecretString=previous)

    def _put_secrets(
        self, cameras: list[Camera]
    ) -> tuple[list[str | None], list[tuple[str, str | None]]]:
        """Write every camera's secret (in parallel); undo them all if any write fails.
        Returns each camera's secret reference and what to undo."""
        from botocore.exceptions import BotoCoreError, ClientError

        wanted = [c for c in cameras if c.password]
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = {c.name: pool.submit(self._put_secret, c) for c in wanted}
        done, failure = [], None
        for future in futures.values():
            try:
                done.append(future.result())
            except (ClientError, BotoCoreError) as exc:
                failure = failure or exc
        if failure is not None:
            self._undo_secrets(done)
            code = _client_error_code(failure)
            raise AwsError(
                f"AWS Secrets Manager write failed: {code}; no camera was changed",
                fix="check the AWS settings and import again",
            )
        arns = {name: f.result()[0] for name, f in futures.items()}
        return [SECRET_REF + arns[c.name] if c.name in arns else None for c in cameras], done

    def write_cameras(self, creates: list[Camera], updates: list[Camera]) -> None:
        """Secrets first, then the cache in one transaction; a failure undoes the secrets."""
        dropped = [self.cache.cameras.password_ref(c.name) for c in updates if not c.password]
        refs, done = self._put_secrets(creates + updates)
        try:
            with self.cache.transaction():
                self.cache.cameras.write_rows(creates, updates, refs)
        except BaseException:
            self._undo_secrets(done)
            raise
        self._delete_secrets([r for r in dropped if r])  # updated to no password

    def camera_password(self, name: str) -> str:
        ref = self.cache.cameras.password_ref(name)
        if not ref:
            return ""
        if not ref.startswith(SECRET_REF):
            return self.cache.camera_password(name)
        sm = self.client("secretsmanager")
        value = self._aws("GetSecretValue", sm.get_secret_value, SecretId=ref[len(SECRET_REF) :])
        return str(json.loads(value["SecretString"]).get("password", ""))

    def _delete_secrets(self, refs: Iterable[str]) -> None:
        sm = self.client("secretsmanager")
        for ref in refs:
            if ref.startswith(SECRET_REF):
                self._aws(
                    "DeleteSecret",
                    sm.delete_secret,
                    SecretId=ref[len(SECRET_REF) :],
                    ForceDeleteWithoutRecovery=True,
                )

    def remove_cameras(self, names: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(names))
        refs = [self.cache.cameras.password_ref(n) for n in wanted]  # NotFound before a change
        removed = self.cache.remove_cameras(wanted)
        self._delete_secrets([r for r in refs if r])
        return removed

    # ---- what the cache answers alone ------------------------------------------------------

    def get_device(self, name: str) -> dict[str, Any] | None:
        return self.cache.get_device(name)

    def list_devices(
        self,
        *,
        sites: Iterable[str] = (),
        tags: Iterable[str] = (),
        names: Iterable[str] = (),
        statuses: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        return self.cache.list_devices(sites=sites, tags=tags, names=names, statuses=statuses)

    def set_device_status(self, name: str, status: str) -> None:
        self.cache.set_device_status(name, status)

    def set_target_software(self, name: str, version: str | None) -> None:
        self.cache.set_target_software(name, version)

    def set_current_software(self, name: str, version: str | None) -> None:
        self.cache.set_current_software(name, version)

    def tag_device(
        self, name: str, tags: Mapping[str, str], remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        return self.cache.tag_device(name, tags, remove)

    def history(self, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.cache.history(subject, limit)

    def camera_names(self) -> set[str]:
        return self.cache.camera_names()

    def camera_counts(self) -> dict[tuple[str, str], int]:
        return self.cache.camera_counts()

    def camera_devices(self) -> dict[str, tuple[str, str]]:
        return self.cache.camera_devices()

    def get_camera(self, name: str) -> dict[str, Any] | None:
        return self.cache.get_camera(name)

    def list_cameras(
        self, *, devices: Iterable[str] = (), sites: Iterable[str] = (), names: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        return self.cache.list_cameras(devices=devices, sites=sites, names=names)

    def set_camera_probe(self, name: str, status: str, codec: str | None, detail: str) -> None:
        self.cache.set_camera_probe(name, status, codec, detail)
