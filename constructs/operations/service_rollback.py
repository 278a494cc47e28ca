"""ServiceRollbackAutomation: an SSM Automation document that moves an ECS service back one task definition revision."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from constructs.compliance import acknowledge_nag, arn_as_nag_shows

# Runs inside Automation (aws:executeScript): picks the revision to return to from the running one's ARN.
_PICK_REVISION = '''
def handler(events, context):
    arn, running = events["Running"].rsplit(":", 1)
    family = arn.rsplit("/", 1)[1]
    wanted = str(events.get("Revision") or "").strip()
    target = int(wanted) if wanted else int(running) - 1
    if target < 1 or target == int(running):
        raise ValueError(f"no revision to roll back to: running {family}:{running}, asked for {wanted or 'the previous'}")
    return {"TaskDefinition": f"{arn}:{target}"}
'''
# How long the rollback may take by default: a Service Connect canary bakes before it completes. The
# services stack passes the time its deployment settings need (deployment_timeout).
DEPLOYMENT_TIMEOUT_SECONDS = 3600
# A service deployment's final states (ECS developer guide, "View service history using Amazon ECS service
# deployments"); the others (PENDING, IN_PROGRESS, STOP_REQUESTED, ROLLBACK_REQUESTED, ROLLBACK_IN_PROGRESS) pass.
DEPLOYMENT_FINAL_STATES = ("SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED")


class ServiceRollbackAutomation(Construct):
    """An Automation document ``document_name`` that sets one service of ``cluster_name`` back to the
    previous task definition revision (or a given one) and waits until the service deployment that this
    started ends SUCCESSFUL (within ``deployment_timeout``, default an hour: what the services' deployment
    strategy and bake times take), run through its own role, which may only describe and update those
    services and read their service deployments and revisions.

    Exposes ``document`` (``ssm.CfnDocument``) and ``role`` (the AutomationAssumeRole).
    """

    def __init__(self, scope: Construct, construct_id: str, *, document_name: str, cluster_name: str,
                 service_names: Sequence[str], deployment_timeout: cdk.Duration | None = None) -> None:
        super().__init__(scope, construct_id)
        if not service_names:
            raise ValueError("service_names=[] is invalid: name at least one ECS service of the cluster")
        stack = cdk.Stack.of(self)
        self.role = iam.Role(
            self, "Role", description=f"AutomationAssumeRole of the SSM document {document_name}",
            assumed_by=iam.ServicePrincipal("ssm.amazonaws.com", conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": stack.format_arn(service="ssm", resource="automation-execution", resource_name="*")}}),
        )
        # UpdateService keeps the service's roles (the task definition names them): no iam:PassRole.
        service_arns = [stack.format_arn(service="ecs", resource="service", resource_name=f"{cluster_name}/{name}")
                        for name in service_names]
        self.role.add_to_principal_policy(iam.PolicyStatement(actions=["ecs:DescribeServices", "ecs:UpdateService"],
                                                              resources=service_arns))
        # Service deployment and revision IDs are assigned by ECS: their ARNs end in one, under the service's path.
        # The Service Authorization Reference lists the service too as a resource both actions require.
        deployment_arns = {kind: [stack.format_arn(service="ecs", resource=kind, resource_name=f"{cluster_name}/{name}/*")
                                  for name in service_names] for kind in ("service-deployment", "service-revision")}
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ecs:DescribeServiceDeployments", "ecs:DescribeServiceRevisions"],
            resources=[*service_arns, *deployment_arns["service-deployment"], *deployment_arns["service-revision"]]))
        acknowledge_nag(self.role, "CDK writes the role's statements (the named services, their deployments and revisions) as "
                        "an inline policy that lives and dies with the role", "NIST.800.53.R5-IAMNoInlinePolicy")
        acknowledge_nag(self.role, "ECS names each service deployment and service revision by an ID it assigns: the role may "
                        "read those of the named services only (<kind>/<cluster>/<service>/*)",
                        *(f"AwsSolutions-IAM5[Resource::{arn_as_nag_shows(self, 'ecs', f'{kind}/{cluster_name}/{name}/*')}]"
                          for kind in deployment_arns for name in service_names))
        cluster = {"cluster": cluster_name, "services": ["{{ ServiceName }}"]}
        deployment = {"Service": "ecs", "Api": "DescribeServiceDeployments",
                      "serviceDeploymentArns": ["{{ UpdateService.ServiceDeployment }}"]}
        self.document = ssm.CfnDocument(
            self, "Document", name=document_name, document_type="Automation", document_format="JSON",
            # A named document cannot be replaced in place: a change becomes its new default version.
            update_method="NewVersion",
            content={
                "schemaVersion": "0.3",
                "description": f"Rolls an ECS service of cluster {cluster_name} back to its previous task definition revision "
                               "(or to Revision) and waits for the deployment to complete. runbooks/elevated-5xx.md",
                "assumeRole": "{{ AutomationAssumeRole }}",
                "parameters": {
                    "ServiceName": {"type": "String", "allowedValues": list(service_names),
                                    "description": "The ECS service to roll back"},
                    "Revision": {"type": "String", "default": "", "allowedPattern": "^[0-9]*$",
                                 "description": "The revision of the service's task definition family to run; empty: the one "
                                                "before the running revision"},
                    "AutomationAssumeRole": {"type": "String", "default": self.role.role_arn,
                                             "description": "The role the steps run as"},
                },
                "mainSteps": [
                    {"name": "DescribeService", "action": "aws:executeAwsApi", "onFailure": "Abort",
                     "inputs": {"Service": "ecs", "Api": "DescribeServices", **cluster},
                     "outputs": [{"Name": "Running", "Selector": "$.services[0].taskDefinition", "Type": "String"}]},
                    {"name": "PickRevision", "action": "aws:executeScript", "onFailure": "Abort",
                     "inputs": {"Runtime": "python3.11", "Handler": "handler", "Script": _PICK_REVISION.strip(),
                                "InputPayload": {"Running": "{{ DescribeService.Running }}", "Revision": "{{ Revision }}"}},
                     "outputs": [{"Name": "TaskDefinition", "Selector": "$.Payload.TaskDefinition", "Type": "String"}]},
                    {"name": "UpdateService", "action": "aws:executeAwsApi", "onFailure": "Abort",
                     "inputs": {"Service": "ecs", "Api": "UpdateService", "cluster": cluster_name,
                                "service": "{{ ServiceName }}", "taskDefinition": "{{ PickRevision.TaskDefinition }}"},
                     "outputs": [{"Name": "ServiceDeployment", "Selector": "$.service.currentServiceDeployment",
                                  "Type": "String"}]},
                    # The service deployment, not DescribeServices' deployments[].rolloutState: ECS documents
                    # rolloutState for rolling updates only, and a canary or linear deployment is not over
                    # (it can still roll back on its alarms) until its bakes end.
                    # Retried: the deployment may take a moment to show once UpdateService has answered.
                    {"name": "ReadDeployment", "action": "aws:executeAwsApi", "onFailure": "Abort", "maxAttempts": 3,
                     "inputs": deployment,
                     "outputs": [{"Name": "TargetRevision", "Selector": "$.serviceDeployments[0].targetServiceRevision.arn",
                                  "Type": "String"}]},
                    # That UpdateService answers with the deployment it started is not documented: a deployment
                    # to another revision (an older one, already over) would make the wait pass at once.
                    {"name": "CheckDeploymentTarget", "action": "aws:assertAwsResourceProperty", "onFailure": "Abort", "maxAttempts": 3,
                     "inputs": {"Service": "ecs", "Api": "DescribeServiceRevisions",
                                "serviceRevisionArns": ["{{ ReadDeployment.TargetRevision }}"],
                                "PropertySelector": "$.serviceRevisions[0].taskDefinition",
                                "DesiredValues": ["{{ PickRevision.TaskDefinition }}"]}},
                    # Any final state ends the wait: waiting for SUCCESSFUL alone would sit out the timeout
                    # after ECS rolled the deployment back.
                    {"name": "WaitForDeployment", "action": "aws:waitForAwsResourceProperty", "onFailure": "Abort",
                     "timeoutSeconds": int(deployment_timeout.to_seconds()) if deployment_timeout else DEPLOYMENT_TIMEOUT_SECONDS,
                     "inputs": {**deployment, "PropertySelector": "$.serviceDeployments[0].status",
                                "DesiredValues": list(DEPLOYMENT_FINAL_STATES)}},
                    {"name": "CheckDeployment", "action": "aws:assertAwsResourceProperty", "onFailure": "Abort",
                     "inputs": {**deployment, "PropertySelector": "$.serviceDeployments[0].status",
                                "DesiredValues": ["SUCCESSFUL"]}},
                    {"name": "CheckRevision", "action": "aws:assertAwsResourceProperty", "onFailure": "Abort",
                     "inputs": {"Service": "ecs", "Api": "DescribeServices", **cluster,
                                "PropertySelector": "$.services[0].taskDefinition",
                                "DesiredValues": ["{{ PickRevision.TaskDefinition }}"]}},
                ],
                "outputs": ["PickRevision.TaskDefinition", "DescribeService.Running"],
            },
        )
