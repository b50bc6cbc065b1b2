"""The AWS backend: devices as AWS IoT things, camera credentials in Secrets Manager.

* one thing per device (attributes: site, serial, hardware, arch), in one
  thing group per site (``<group_prefix><site>``, default ``edgefleet-<site>``);
* the device certificate is registered (``RegisterCertificateWithoutCA``),
  attached to its thing and to a per-thing policy ``edgefleet-<thing>`` that
  allows only ``client/<thing>`` and the ``edgefleet/<thing>/*`` and
  ``$aws/things/<thing>/*`` topics;
* camera usernames and passwords live in ``<secret_prefix>cameras/<camera>``
  (default prefix ``edgefleet/``); the local cache keeps only the secret's ARN;
* the local SQLite database (``.fleet/registry.db``) stays the cache every
  listing reads. AWS is written first, then the cache, so the cache never
  claims what AWS does not have; camera imports undo their AWS writes when
  any of them fails.

``fleet.yaml``::

    registry: {backend: aws, region: eu-central-1, endpoint_url: http://127.0.0.1:5000}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fleet.errors import ConfigError, FleetError
from fleet.project import Project
from fleet.registry import Camera, RegisterResult
from fleet.registry import hosts as inventory_hosts
from fleet.registry.schema import migrate
from fleet.registry.sqlite import SQLiteRegistry, connect

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


class AwsRegistry(SQLiteRegistry):
    """SQLite cache + AWS IoT Core + Secrets Manager."""

    backend = "aws"

    def __init__(
        self,
        conn: Any,
        project: Project,
        config: Mapping[str, Any],
        session_factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(conn, project.state_dir, project.known_hosts)
        self.config = dict(config)
        self.group_prefix = str(config.get("group_prefix", "edgefleet-"))
        self.secret_prefix = str(config.get("secret_prefix", "edgefleet/"))
        self._clients: dict[str, Any] = {}

    @classmethod
    def open(  # type: ignore[override]
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
        path = project.state_dir / filename
        conn = connect(path)
        migrate(conn, str(path))
        return cls(conn, project, config)

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
        merged = {**(self._device_row(name) or {}), **fields}
        if {"site", "serial", "hardware", "arch"} & set(fields) or self._device_row(name) is None:
            self._sync_thing(name, merged)
        return super().upsert_device(name, **fields)

    def register_from_inventory(self, nornir_or_hosts: Any) -> RegisterResult:
        for name, fields in inventory_hosts.entries(nornir_or_hosts, self.known_hosts):
            self._sync_thing(name, fields)
        return super().register_from_inventory(nornir_or_hosts)

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
        row = self._require_device(name)
        thing_arn = self._sync_thing(name, row)
        cert_arn = self._register_certificate(cert_pem)
        policy = self._ensure_policy(name, thing_arn)
        iot = self.client("iot")
        self._aws("AttachPolicy", iot.attach_policy, policyName=policy, target=cert_arn)
        self._aws(
            "AttachThingPrincipal", iot.attach_thing_principal, thingName=name, principal=cert_arn
        )
        out = super().set_device_certificate(name, cert_pem)
        return {**out, "certificate_arn": cert_arn, "policy": policy}

    def deregister_device(self, name: str, *, remove_cameras: bool = False) -> dict[str, Any]:
        """Revoke the thing's certificates in IoT, delete its policy and thing, then the cache."""
        self._require_device(name)
        refs = [self._password_ref(c["name"]) for c in self.list_cameras(devices=[name])]
        if refs and not remove_cameras:
            return super().deregister_device(name, remove_cameras=False)  # refuses, says why
        self._retire_thing(name)
        self._delete_secrets([r for r in refs if r])
        return super().deregister_device(name, remove_cameras=remove_cameras)

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
        dropped = [self._password_ref(c.name) for c in updates if not c.password]
        refs, done = self._put_secrets(creates + updates)
        try:
            with self.transaction():
                self._write_cameras(creates, updates, refs)
        except BaseException:
            self._undo_secrets(done)
            raise
        self._delete_secrets([r for r in dropped if r])  # updated to no password

    def camera_password(self, name: str) -> str:
        ref = self._password_ref(name)
        if not ref:
            return ""
        if not ref.startswith(SECRET_REF):
            return super().camera_password(name)
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
        refs = [self._password_ref(n) for n in wanted]  # raises NotFound before any change
        removed = super().remove_cameras(wanted)
        self._delete_secrets([r for r in refs if r])
        return removed
