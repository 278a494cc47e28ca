"""SigningKeyRotation: the function and schedule that rotate a JWT signing-key secret."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov, skip_role_dependency_lint
from constructs.lambda_layer import ARCHITECTURE, RUNTIME, built_layer

HANDLER_DIR = Path(__file__).resolve().parent / "rotation"
LAYER_DIR = Path(__file__).resolve().parent / "rotation_layer" / "build"
# What rotation reads and writes: the versions of the secret and their staging labels.
ROTATION_SECRET_ACTIONS = (
    "secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
)
# Secrets Manager decrypts the current version and encrypts the new one with the caller's permissions;
# for each replica it encrypts the new version with that region's replica key.
ROTATION_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
REPLICA_KEY_ACTIONS = ("kms:Encrypt", "kms:GenerateDataKey")


class SigningKeyRotation(Construct):
    """A Python function (``rotation/handler.py``) that replaces ``secret``'s RSA signing key every
    ``rotation_interval``, keeping each retired public key for ``previous_key_retention``.

    The function's dependencies (``cryptography``) come from a layer that ``make install`` builds into
    ``rotation_layer/build``; without it this raises FileNotFoundError naming the command.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, secret: secretsmanager.Secret, key: kms.IKey,
        replica_keys: Sequence[tuple[str, str]], rotation_interval: cdk.Duration, previous_key_retention: cdk.Duration,
        log_group: logs.ILogGroup, layer_dir: Path | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        layer_dir = layer_dir or LAYER_DIR
        self.layer = built_layer(
            self, "Dependencies", layer_dir=layer_dir, purpose="the signing-key rotation function's dependencies",
            description="cryptography for the signing-key rotation function (rotation_layer/requirements.txt)",
        )
        stack = cdk.Stack.of(self)
        secret_name = secret.node.default_child.name  # the literal name (secret.secret_name is a token)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=f"Rotates {secret_name}")
        self.function = lambda_.Function(
            self, "Function",
            runtime=RUNTIME, architecture=ARCHITECTURE,
            code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__", "*.pyc"]),
            handler="handler.handler", layers=[self.layer], role=self.role,
            # RSA key generation takes well under a second; the rest is four Secrets Manager calls.
            timeout=cdk.Duration.seconds(30), memory_size=256,
            environment={"PREVIOUS_KEY_RETENTION_SECONDS": str(int(previous_key_retention.to_seconds()))},
            log_group=log_group,
            description=f"Rotates the RSA key in {secret_name}",
        )
        log_group.grant_write(self.role)
        statements = [
            iam.PolicyStatement(actions=list(ROTATION_SECRET_ACTIONS), resources=[secret.secret_arn]),
            iam.PolicyStatement(actions=list(ROTATION_KEY_ACTIONS), resources=[key.key_arn], conditions={"StringEquals": {
                "kms:ViaService": f"secretsmanager.{stack.region}.amazonaws.com", "kms:EncryptionContext:SecretARN": secret.secret_arn}}),
        ]
        for region, replica_key_arn in replica_keys:
            statements.append(iam.PolicyStatement(
                actions=list(REPLICA_KEY_ACTIONS), resources=[replica_key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}))
        for statement in statements:
            self.role.add_to_principal_policy(statement)
        self.function.add_permission(
            "InvokedBySecretsManager", principal=iam.ServicePrincipal("secretsmanager.amazonaws.com"),
            source_account=stack.account, source_arn=secret.secret_arn)
        self.schedule = secretsmanager.CfnRotationSchedule(
            self, "Schedule", secret_id=secret.secret_arn, rotation_lambda_arn=self.function.function_arn,
            rotation_rules=secretsmanager.CfnRotationSchedule.RotationRulesProperty(
                schedule_expression=f"rate({int(rotation_interval.to_days())} days)"),
            # The first deploy replaces the secret's placeholder with a real key right away.
            rotate_immediately_on_update=True,
        )
        # Secrets Manager invokes the function as soon as the schedule exists: it must be allowed to,
        # and the function must hold its permissions (the role's policy) by then.
        self.schedule.node.add_dependency(self.function.node.find_child("InvokedBySecretsManager"), self.role)
        self._acknowledge()

    def _acknowledge(self) -> None:
        acknowledge_nag(
            self.role,
            "CDK writes the rotation function's grants (this secret, its keys through Secrets Manager, its log group) "
            "into the role's own inline policy, which lives and dies with the role",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        acknowledge_nag(
            self.function,
            "Secrets Manager invokes the rotation function synchronously, once per step, and records a failed rotation "
            "on the secret (and retries it): a dead-letter queue would never be read",
            "NIST.800.53.R5-LambdaDLQ",
        )
        acknowledge_nag(
            self.function,
            "the rotation function runs a few times per rotation interval; reserving concurrency would only take "
            "capacity from the account's unreserved pool (which must stay at 10 or more) and protect nothing",
            "NIST.800.53.R5-LambdaConcurrency",
        )
        acknowledge_nag(
            self.function,
            "the rotation function only calls the Secrets Manager API (through KMS on its side) and reaches nothing "
            "inside a VPC; attaching it to one would add ENIs and a NAT dependency for no isolation gained",
            "NIST.800.53.R5-LambdaInsideVPC",
        )
        skip_checkov(self.function.node.default_child, {
            "CKV_AWS_115": "Secrets Manager invokes the rotation function a few times per rotation; reserved concurrency would protect nothing",
            "CKV_AWS_116": "Secrets Manager invokes the rotation function synchronously and records its failures; a DLQ would never be read",
            "CKV_AWS_117": "The rotation function only calls the Secrets Manager API and needs no network path into the VPC",
            "CKV_AWS_173": "The function's one environment variable is a retention in seconds, nothing secret; a customer key for it would protect nothing",
        })
        skip_role_dependency_lint(self.function.node.default_child)
