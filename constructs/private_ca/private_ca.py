"""An active root AWS Private CA for service-to-service TLS inside the mesh."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_acmpca as acmpca
from constructs import Construct

_USAGE_MODES = ("SHORT_LIVED_CERTIFICATE", "GENERAL_PURPOSE")


class PrivateCertificateAuthority(Construct):
    """A root CA, self-signed and activated in the same deployment. Exposes ``certificate_authority_arn``.

    ``usage_mode``: SHORT_LIVED_CERTIFICATE (certificates valid at most 7 days, priced per month
    far below general purpose; what ECS Service Connect TLS uses) or GENERAL_PURPOSE (needed for ACM
    private certificates, which App Mesh uses). The CA is retained when the stack is deleted:
    deleting it would break every certificate it issued.
    """

    def __init__(self, scope: Construct, construct_id: str, *, common_name: str, usage_mode: str, validity_years: int = 10) -> None:
        super().__init__(scope, construct_id)
        if usage_mode not in _USAGE_MODES:
            raise ValueError(f"usage_mode={usage_mode!r} is invalid: use one of {', '.join(_USAGE_MODES)}")
        self.authority = acmpca.CfnCertificateAuthority(
            self, "Authority",
            type="ROOT",
            key_algorithm="EC_prime256v1",
            signing_algorithm="SHA256WITHECDSA",
            subject=acmpca.CfnCertificateAuthority.SubjectProperty(common_name=common_name),
            usage_mode=usage_mode,
            # ECS Service Connect only uses CAs that carry this tag.
            tags=[cdk.CfnTag(key="AmazonECSManaged", value="true")],
        )
        self.authority.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        root_certificate = acmpca.CfnCertificate(
            self, "RootCertificate",
            certificate_authority_arn=self.authority.attr_arn,
            certificate_signing_request=self.authority.attr_certificate_signing_request,
            signing_algorithm="SHA256WITHECDSA",
            template_arn="arn:aws:acm-pca:::template/RootCACertificate/V1",
            validity=acmpca.CfnCertificate.ValidityProperty(type="YEARS", value=validity_years),
        )
        activation = acmpca.CfnCertificateAuthorityActivation(
            self, "Activation",
            certificate_authority_arn=self.authority.attr_arn,
            certificate=root_certificate.attr_certificate,
            status="ACTIVE",
        )
        if usage_mode == "GENERAL_PURPOSE":
            # ACM renews the private certificates it issued from this CA only with this permission.
            acmpca.CfnPermission(
                self, "AcmRenewal",
                certificate_authority_arn=self.authority.attr_arn,
                principal="acm.amazonaws.com",
                actions=["IssueCertificate", "GetCertificate", "ListPermissions"],
            )
        self.certificate_authority_arn = self.authority.attr_arn
        self.activation = activation
