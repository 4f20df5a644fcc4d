"""The committed CloudFormation template: generated from TABLES, up to date, lint-clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import cloudformation
from server.store.schema import TABLES, TableSpec

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "cloudformation.json"


def committed() -> dict[str, object]:
    return json.loads(TEMPLATE.read_text())


def test_committed_template_is_the_generated_one() -> None:
    assert TEMPLATE.read_text() == cloudformation.render(), (
        "deploy/cloudformation.json is stale: run `python -m deploy.cloudformation`"
    )


def test_check_flag_exits_1_when_stale(tmp_path: Path) -> None:
    stale = tmp_path / "cloudformation.json"
    stale.write_text("{}\n")
    assert cloudformation.main(["--check", "--output", str(stale)]) == 1
    assert cloudformation.main(["--output", str(stale)]) == 0
    assert cloudformation.main(["--check", "--output", str(stale)]) == 0


def test_cfn_lint_passes() -> None:
    executable = shutil.which("cfn-lint")
    if executable is None:  # installed next to this interpreter but not on PATH
        candidate = Path(sys.executable).with_name("cfn-lint")
        if not candidate.exists():
            pytest.fail("cfn-lint is not installed: pip install -e '.[dev]'")
        executable = str(candidate)
    result = subprocess.run(
        [executable, str(TEMPLATE)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("spec", TABLES, ids=lambda spec: spec.suffix)
def test_every_table_is_in_the_template_with_its_keys_and_ttl(spec: TableSpec) -> None:
    resources = committed()["Resources"]
    assert isinstance(resources, dict)
    tables = {
        resource["Properties"]["TableName"]["Fn::Sub"]: resource["Properties"]
        for resource in resources.values()
        if resource["Type"] == "AWS::DynamoDB::Table"
    }
    assert len(tables) == len(TABLES)
    properties = tables[f"companion-${{EnvironmentName}}-{spec.suffix}"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    expected_keys = [{"AttributeName": spec.partition_key.name, "KeyType": "HASH"}]
    if spec.sort_key is not None:
        expected_keys.append({"AttributeName": spec.sort_key.name, "KeyType": "RANGE"})
    assert properties["KeySchema"] == expected_keys
    assert properties["AttributeDefinitions"] == [
        {"AttributeName": key.name, "AttributeType": key.type} for key in spec.keys
    ]
    if spec.ttl_attribute is None:
        assert "TimeToLiveSpecification" not in properties
    else:
        assert properties["TimeToLiveSpecification"] == {
            "AttributeName": spec.ttl_attribute,
            "Enabled": True,
        }


def test_task_role_reaches_exactly_the_stack_tables_and_media_prefix() -> None:
    resources = committed()["Resources"]
    assert isinstance(resources, dict)
    statements = resources["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    by_sid = {statement["Sid"]: statement for statement in statements}
    table_ids = {
        name for name, resource in resources.items() if resource["Type"] == "AWS::DynamoDB::Table"
    }
    assert {arn["Fn::GetAtt"][0] for arn in by_sid["Tables"]["Resource"]} == table_ids
    assert not any("*" in action for action in by_sid["Tables"]["Action"])
    assert by_sid["MediaObjects"]["Resource"] == {"Fn::Sub": "${MediaBucket.Arn}/avatars/*"}


def test_task_environment_points_at_the_stack() -> None:
    resources = committed()["Resources"]
    assert isinstance(resources, dict)
    container = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    env = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert env["COMPANION_STORE"] == "dynamodb"
    assert env["COMPANION_TABLE_PREFIX"] == {"Fn::Sub": "companion-${EnvironmentName}-"}
    assert env["COMPANION_BROKER"]["Fn::Sub"].startswith("rediss://")
    assert env["COMPANION_MEDIA"] == {"Fn::Sub": "s3://${MediaBucket}/avatars"}
    assert [secret["Name"] for secret in container["Secrets"]] == ["COMPANION_SECRET"]
    attributes = {
        item["Key"]: item["Value"]
        for item in resources["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]
    }
    assert attributes["idle_timeout.timeout_seconds"] == "3600"
    assert resources["TargetGroup"]["Properties"]["HealthCheckPath"] == "/readyz"
    assert committed()["Parameters"]["Secret"]["NoEcho"] is True


def test_the_redis_broker_is_what_the_cluster_design_needs() -> None:
    """ElastiCache with a replica in another zone and automatic failover (a broker that
    heals), TLS in transit (hence ``rediss://``), reachable from the tasks only, and its
    primary endpoint handed to every task as the broker URL."""
    resources = committed()["Resources"]
    assert isinstance(resources, dict)
    redis = resources["Redis"]
    assert redis["Type"] == "AWS::ElastiCache::ReplicationGroup"
    properties = redis["Properties"]
    assert properties["Engine"] == "redis"
    assert properties["NumCacheClusters"] >= 2
    assert properties["AutomaticFailoverEnabled"] is True
    assert properties["MultiAZEnabled"] is True
    assert properties["TransitEncryptionEnabled"] is True
    assert properties["SecurityGroupIds"] == [{"Ref": "RedisSecurityGroup"}]
    ingress = resources["RedisSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [rule["SourceSecurityGroupId"] for rule in ingress] == [{"Ref": "ServiceSecurityGroup"}]
    container = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    env = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert env["COMPANION_BROKER"] == {
        "Fn::Sub": "rediss://${Redis.PrimaryEndPoint.Address}:${Redis.PrimaryEndPoint.Port}"
    }
