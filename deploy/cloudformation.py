"""Generate ``deploy/cloudformation.json``, the AWS stack, from :data:`server.store.schema.TABLES`.

The DynamoDB tables are defined once, in :mod:`server.store.schema`; this module turns that
data into ``AWS::DynamoDB::Table`` resources next to the rest of a production stack:

- an S3 bucket for avatars (public access blocked; the server hands out presigned URLs),
- ElastiCache for Redis (the broker between nodes; TLS in transit, so ``rediss://``),
- an ECS cluster running the server image on Fargate behind an Application Load Balancer
  (health check ``/readyz``; idle timeout one hour so quiet WebSockets stay open),
- a Secrets Manager secret for ``COMPANION_SECRET``, and a task role that may touch exactly
  these tables and the bucket's ``avatars/`` prefix.

``python -m deploy.cloudformation`` writes the template; ``--check`` exits 1 when the
committed file differs from what would be generated (CI runs it, and so does a test).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from server.store.schema import TABLES, TableSpec

TEMPLATE_PATH = Path(__file__).with_name("cloudformation.json")

CONTAINER_NAME = "companion"
CONTAINER_PORT = 8000
MEDIA_PREFIX = "avatars"
ALB_IDLE_TIMEOUT_S = 3600
"""WebSockets idle between keepalive pings must not be cut by the load balancer."""
DEREGISTRATION_DELAY_S = 15
"""Draining before ECS sends SIGTERM; the server then closes WebSockets with 1012."""
STOP_TIMEOUT_S = 30
"""SIGTERM → SIGKILL: above uvicorn's 10 s graceful shutdown plus the ingest flush."""
OPEN_FILES = 65536

DYNAMODB_ACTIONS = (
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:UpdateItem",
)
"""What the store calls (server/store/dynamodb.py); tables are created by the stack."""

Json = dict[str, Any]


def ref(name: str) -> Json:
    return {"Ref": name}


def sub(text: str) -> Json:
    return {"Fn::Sub": text}


def get_att(resource: str, attribute: str) -> Json:
    return {"Fn::GetAtt": [resource, attribute]}


def tags(name: str) -> list[Json]:
    return [{"Key": "Name", "Value": sub(f"companion-${{EnvironmentName}}-{name}")}]


def table_logical_id(spec: TableSpec) -> str:
    """``frames`` → ``FramesTable``, ``user_state`` → ``UserStateTable``."""
    return "".join(part.capitalize() for part in spec.suffix.split("_")) + "Table"


def table_resource(spec: TableSpec) -> Json:
    key_schema = [{"AttributeName": spec.partition_key.name, "KeyType": "HASH"}]
    if spec.sort_key is not None:
        key_schema.append({"AttributeName": spec.sort_key.name, "KeyType": "RANGE"})
    properties: Json = {
        "TableName": sub(f"companion-${{EnvironmentName}}-{spec.suffix}"),
        "BillingMode": spec.billing_mode,
        "AttributeDefinitions": [
            {"AttributeName": key.name, "AttributeType": key.type} for key in spec.keys
        ],
        "KeySchema": key_schema,
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
    }
    if spec.ttl_attribute is not None:
        properties["TimeToLiveSpecification"] = {
            "AttributeName": spec.ttl_attribute,
            "Enabled": True,
        }
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
    }


def parameters() -> Json:
    return {
        "EnvironmentName": {
            "Type": "String",
            "Description": "Environment name; tables are named companion-<env>-<table>.",
            "AllowedPattern": "^[a-z0-9][a-z0-9-]{0,30}$",
            "ConstraintDescription": "lower-case letters, digits and '-', at most 31",
            "Default": "prod",
        },
        "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "VPC of the stack."},
        "SubnetIds": {
            "Type": "List<AWS::EC2::Subnet::Id>",
            "Description": "At least two subnets in different zones (load balancer, tasks, Redis).",
        },
        "AssignPublicIp": {
            "Type": "String",
            "Description": "ENABLED for public subnets without a NAT gateway (to pull the image).",
            "AllowedValues": ["ENABLED", "DISABLED"],
            "Default": "ENABLED",
        },
        "ImageUri": {"Type": "String", "Description": "The server image (built from Dockerfile)."},
        "DesiredCount": {
            "Type": "Number",
            "Description": "Server tasks; any device may land on any of them.",
            "Default": 2,
            "MinValue": 1,
        },
        "Secret": {
            "Type": "String",
            "NoEcho": True,
            "Description": "Token signing secret (COMPANION_SECRET), at least 32 characters.",
            "MinLength": 32,
        },
        "CertificateArn": {
            "Type": "String",
            "Description": "ACM certificate for HTTPS on 443; empty: plain HTTP on 80.",
            "Default": "",
        },
        "CacheNodeType": {
            "Type": "String",
            "Description": "ElastiCache node type of the Redis broker.",
            "Default": "cache.t4g.small",
        },
    }


def table_arns() -> list[Json]:
    return [get_att(table_logical_id(spec), "Arn") for spec in TABLES]


def security_groups() -> Json:
    return {
        "LoadBalancerSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "companion load balancer: HTTP(S) from anywhere",
                "VpcId": ref("VpcId"),
                "SecurityGroupIngress": [
                    {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "CidrIp": "0.0.0.0/0"}
                    for port in (80, 443)
                ],
                "Tags": tags("alb"),
            },
        },
        "ServiceSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "companion tasks: the server port from the load balancer",
                "VpcId": ref("VpcId"),
                "SecurityGroupIngress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": CONTAINER_PORT,
                        "ToPort": CONTAINER_PORT,
                        "SourceSecurityGroupId": ref("LoadBalancerSecurityGroup"),
                    }
                ],
                "Tags": tags("service"),
            },
        },
        "RedisSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "companion Redis: 6379 from the tasks only",
                "VpcId": ref("VpcId"),
                "SecurityGroupIngress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 6379,
                        "ToPort": 6379,
                        "SourceSecurityGroupId": ref("ServiceSecurityGroup"),
                    }
                ],
                "Tags": tags("redis"),
            },
        },
    }


def storage() -> Json:
    return {
        "MediaBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                    ]
                },
                "Tags": tags("media"),
            },
        },
        "MediaBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": ref("MediaBucket"),
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "TlsOnly",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [
                                get_att("MediaBucket", "Arn"),
                                sub("${MediaBucket.Arn}/*"),
                            ],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                },
            },
        },
        "SigningSecret": {
            "Type": "AWS::SecretsManager::Secret",
            "Properties": {
                "Name": sub("companion-${EnvironmentName}-secret"),
                "Description": "companion token signing secret (COMPANION_SECRET)",
                "SecretString": ref("Secret"),
            },
        },
        "RedisSubnetGroup": {
            "Type": "AWS::ElastiCache::SubnetGroup",
            "Properties": {
                "Description": "companion Redis broker",
                "SubnetIds": ref("SubnetIds"),
            },
        },
        "Redis": {
            "Type": "AWS::ElastiCache::ReplicationGroup",
            "Properties": {
                "ReplicationGroupDescription": "companion broker: deltas between nodes",
                "Engine": "redis",
                "CacheNodeType": ref("CacheNodeType"),
                "NumCacheClusters": 2,
                "AutomaticFailoverEnabled": True,
                "MultiAZEnabled": True,
                "TransitEncryptionEnabled": True,
                "AtRestEncryptionEnabled": True,
                "CacheSubnetGroupName": ref("RedisSubnetGroup"),
                "SecurityGroupIds": [ref("RedisSecurityGroup")],
                "Tags": tags("redis"),
            },
        },
    }


def iam() -> Json:
    assume_ecs = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    return {
        "ExecutionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assume_ecs,
                "ManagedPolicyArns": [
                    sub(
                        "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                        "AmazonECSTaskExecutionRolePolicy"
                    )
                ],
                "Policies": [
                    {
                        "PolicyName": "read-signing-secret",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": "secretsmanager:GetSecretValue",
                                    "Resource": ref("SigningSecret"),
                                }
                            ],
                        },
                    }
                ],
            },
        },
        "TaskRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assume_ecs,
                "Policies": [
                    {
                        "PolicyName": "companion-data",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Sid": "Tables",
                                    "Effect": "Allow",
                                    "Action": list(DYNAMODB_ACTIONS),
                                    "Resource": table_arns(),
                                },
                                {
                                    "Sid": "MediaObjects",
                                    "Effect": "Allow",
                                    "Action": ["s3:GetObject", "s3:PutObject"],
                                    "Resource": sub(f"${{MediaBucket.Arn}}/{MEDIA_PREFIX}/*"),
                                },
                                {
                                    "Sid": "MediaListForNotFound",
                                    "Effect": "Allow",
                                    "Action": "s3:ListBucket",
                                    "Resource": get_att("MediaBucket", "Arn"),
                                    "Condition": {
                                        "StringLike": {"s3:prefix": [f"{MEDIA_PREFIX}/*"]}
                                    },
                                },
                            ],
                        },
                    }
                ],
            },
        },
    }


def compute() -> Json:
    health_command = (
        "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen("
        f"'http://127.0.0.1:{CONTAINER_PORT}/healthz', timeout=2).status == 200 else 1)"
    )
    environment = {
        "COMPANION_STORE": "dynamodb",
        "COMPANION_TABLE_PREFIX": sub("companion-${EnvironmentName}-"),
        "COMPANION_BROKER": sub(
            "rediss://${Redis.PrimaryEndPoint.Address}:${Redis.PrimaryEndPoint.Port}"
        ),
        "COMPANION_MEDIA": sub(f"s3://${{MediaBucket}}/{MEDIA_PREFIX}"),
        "COMPANION_PORT": str(CONTAINER_PORT),
        # Behind the ALB every peer address is one of the balancer's: the penalty box would
        # refuse the balancer, and with it every device, for one client's abuse.
        "COMPANION_PENALTY_S": "0",
        "AWS_REGION": ref("AWS::Region"),
    }
    return {
        "Cluster": {
            "Type": "AWS::ECS::Cluster",
            "Properties": {
                "ClusterName": sub("companion-${EnvironmentName}"),
                "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}],
            },
        },
        "LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": sub("/companion/${EnvironmentName}"),
                "RetentionInDays": 30,
            },
        },
        "TaskDefinition": {
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {
                "Family": sub("companion-${EnvironmentName}"),
                "RequiresCompatibilities": ["FARGATE"],
                "NetworkMode": "awsvpc",
                "Cpu": "1024",
                "Memory": "2048",
                "RuntimePlatform": {
                    "CpuArchitecture": "X86_64",
                    "OperatingSystemFamily": "LINUX",
                },
                "ExecutionRoleArn": get_att("ExecutionRole", "Arn"),
                "TaskRoleArn": get_att("TaskRole", "Arn"),
                "ContainerDefinitions": [
                    {
                        "Name": CONTAINER_NAME,
                        "Image": ref("ImageUri"),
                        "Essential": True,
                        "PortMappings": [{"ContainerPort": CONTAINER_PORT, "Protocol": "tcp"}],
                        "Environment": [
                            {"Name": name, "Value": value} for name, value in environment.items()
                        ],
                        "Secrets": [
                            {"Name": "COMPANION_SECRET", "ValueFrom": ref("SigningSecret")}
                        ],
                        "StopTimeout": STOP_TIMEOUT_S,
                        "Ulimits": [
                            {"Name": "nofile", "SoftLimit": OPEN_FILES, "HardLimit": OPEN_FILES}
                        ],
                        "HealthCheck": {
                            "Command": ["CMD", "python", "-c", health_command],
                            "Interval": 15,
                            "Timeout": 3,
                            "Retries": 3,
                            "StartPeriod": 15,
                        },
                        "LogConfiguration": {
                            "LogDriver": "awslogs",
                            "Options": {
                                "awslogs-group": ref("LogGroup"),
                                "awslogs-region": ref("AWS::Region"),
                                "awslogs-stream-prefix": "companion",
                            },
                        },
                    }
                ],
            },
        },
        "Service": {
            "Type": "AWS::ECS::Service",
            "DependsOn": ["Listener"],
            "Properties": {
                "ServiceName": sub("companion-${EnvironmentName}"),
                "Cluster": ref("Cluster"),
                "TaskDefinition": ref("TaskDefinition"),
                "LaunchType": "FARGATE",
                "DesiredCount": ref("DesiredCount"),
                "HealthCheckGracePeriodSeconds": 30,
                "DeploymentConfiguration": {
                    "MinimumHealthyPercent": 100,
                    "MaximumPercent": 200,
                    "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                },
                "NetworkConfiguration": {
                    "AwsvpcConfiguration": {
                        "AssignPublicIp": ref("AssignPublicIp"),
                        "SecurityGroups": [ref("ServiceSecurityGroup")],
                        "Subnets": ref("SubnetIds"),
                    }
                },
                "LoadBalancers": [
                    {
                        "ContainerName": CONTAINER_NAME,
                        "ContainerPort": CONTAINER_PORT,
                        "TargetGroupArn": ref("TargetGroup"),
                    }
                ],
            },
        },
    }


def load_balancer() -> Json:
    https = "HasCertificate"
    return {
        "LoadBalancer": {
            "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "Properties": {
                "Type": "application",
                "Scheme": "internet-facing",
                "Subnets": ref("SubnetIds"),
                "SecurityGroups": [ref("LoadBalancerSecurityGroup")],
                "LoadBalancerAttributes": [
                    {"Key": "idle_timeout.timeout_seconds", "Value": str(ALB_IDLE_TIMEOUT_S)},
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                ],
                "Tags": tags("alb"),
            },
        },
        "TargetGroup": {
            "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
            "Properties": {
                "VpcId": ref("VpcId"),
                "TargetType": "ip",
                "Protocol": "HTTP",
                "Port": CONTAINER_PORT,
                "HealthCheckProtocol": "HTTP",
                "HealthCheckPath": "/readyz",
                "HealthCheckIntervalSeconds": 10,
                "HealthCheckTimeoutSeconds": 5,
                "HealthyThresholdCount": 2,
                "UnhealthyThresholdCount": 3,
                "Matcher": {"HttpCode": "200"},
                "TargetGroupAttributes": [
                    {
                        "Key": "deregistration_delay.timeout_seconds",
                        "Value": str(DEREGISTRATION_DELAY_S),
                    },
                    {"Key": "stickiness.enabled", "Value": "false"},
                ],
                "Tags": tags("targets"),
            },
        },
        "Listener": {
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": ref("LoadBalancer"),
                "Port": {"Fn::If": [https, 443, 80]},
                "Protocol": {"Fn::If": [https, "HTTPS", "HTTP"]},
                "SslPolicy": {
                    "Fn::If": [https, "ELBSecurityPolicy-TLS13-1-2-2021-06", ref("AWS::NoValue")]
                },
                "Certificates": {
                    "Fn::If": [
                        https,
                        [{"CertificateArn": ref("CertificateArn")}],
                        ref("AWS::NoValue"),
                    ]
                },
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": ref("TargetGroup")}],
            },
        },
    }


def outputs() -> Json:
    return {
        "LoadBalancerDnsName": {
            "Description": "Point the service's DNS name here; devices connect to /v1/ws.",
            "Value": get_att("LoadBalancer", "DNSName"),
        },
        "TablePrefix": {
            "Description": "COMPANION_TABLE_PREFIX of this environment.",
            "Value": sub("companion-${EnvironmentName}-"),
        },
        "MediaBucketName": {"Description": "Avatar images.", "Value": ref("MediaBucket")},
        "RedisEndpoint": {
            "Description": "The broker (TLS).",
            "Value": get_att("Redis", "PrimaryEndPoint.Address"),
        },
    }


def template() -> Json:
    """The whole stack as a JSON-ready dict."""
    resources: Json = {table_logical_id(spec): table_resource(spec) for spec in TABLES}
    for part in (security_groups(), storage(), iam(), load_balancer(), compute()):
        resources.update(part)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            "companion push server: Fargate tasks behind an ALB, DynamoDB tables on demand, "
            "ElastiCache Redis broker, S3 media. Generated by `python -m deploy.cloudformation`;"
            " do not edit by hand."
        ),
        "Parameters": parameters(),
        "Conditions": {
            "HasCertificate": {"Fn::Not": [{"Fn::Equals": [ref("CertificateArn"), ""]}]}
        },
        "Resources": resources,
        "Outputs": outputs(),
    }


def render() -> str:
    """The template as the committed file's text."""
    return json.dumps(template(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.cloudformation", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed template is out of date"
    )
    parser.add_argument("--output", type=Path, default=TEMPLATE_PATH, help="template path")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is out of date: run `python -m deploy.cloudformation`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
