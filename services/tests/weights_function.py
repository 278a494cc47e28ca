"""Shared by the tests of the strangler fig's function (constructs/strangler_fig/function), which both the strangler
fig (entry point ``handler``) and the listener rule guard (``guard``) deploy: the handler module, loaded as Lambda
loads it, and moto's load balancer with a listener to hang rules on.

The handler's tests live with the services because this virtualenv has boto3 and moto; the CDK app's
cannot take botocore (its jsii pins a python-dateutil botocore does not accept).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from harness import load_module

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "constructs" / "strangler_fig" / "function"
REGION = "eu-central-1"

sys.path.insert(0, str(FUNCTION_DIR))  # the handler imports weights.py beside it, as Lambda does
handler = load_module("weights_function_handler", FUNCTION_DIR / "handler.py")


def forward(weights: dict[str, int]) -> dict[str, Any]:
    """A listener rule's forward action over target group ARN -> weight."""
    return {"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": a, "Weight": w} for a, w in weights.items()]}}


def listener(elbv2: Any, ec2: Any) -> tuple[str, str]:
    """(VPC ID, listener ARN): an internal load balancer over two subnets in moto, its listener answering 404."""
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"]
               for i, az in enumerate("ab")]
    lb = elbv2.create_load_balancer(Name="mf", Subnets=subnets, Scheme="internal")["LoadBalancers"][0]["LoadBalancerArn"]
    arn = elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[
        {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}])["Listeners"][0]["ListenerArn"]
    return vpc, arn
