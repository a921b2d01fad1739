"""The IAM policies in ops/ grant exactly what the code calls.

The package source is scanned (``ast``) for calls on the AWS clients (``self._dynamodb``,
``self._s3``, ``clients.dynamodb``...); every operation maps to IAM actions through
:data:`ACTIONS`. An operation missing from the table fails the test: add it (and to the
policies). ``TransactWriteItems`` has no IAM action of its own: each action inside the
transaction is authorised as ``PutItem`` / ``UpdateItem`` / ``DeleteItem`` /
``ConditionCheckItem``, so the kinds of action the code builds are scanned too.

- The union of the runtime and admin policies grants every action the code needs.
- The runtime policy grants exactly the data path's actions (schema management is
  :data:`SCHEMA_OPERATIONS`, in the admin policy).
- The CloudFormation template's managed policy is the runtime policy.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "eventstore_async"
RUNTIME_POLICY = ROOT / "ops" / "iam-policy-runtime.json"
ADMIN_POLICY = ROOT / "ops" / "iam-policy-admin.json"
TEMPLATE = ROOT / "ops" / "cloudformation.yaml"

#: The last name of a call's receiver -> the AWS service it is a client of.
CLIENT_NAMES = {"_dynamodb": "dynamodb", "dynamodb": "dynamodb", "_s3": "s3", "s3": "s3"}
#: Client methods that are not AWS operations.
NOT_OPERATIONS = {"close", "can_paginate", "get_waiter", "__aenter__", "__aexit__"}
#: Marks ``transact_write_items``: its actions come from the TransactItems kinds.
TRANSACTION = "<transaction>"

#: (service, botocore operation) -> IAM actions it needs.
ACTIONS: dict[tuple[str, str], frozenset[str]] = {
    ("dynamodb", op): frozenset(actions)
    for op, actions in {
        "get_item": {"dynamodb:GetItem"},
        "query": {"dynamodb:Query"},
        "scan": {"dynamodb:Scan"},
        "batch_get_item": {"dynamodb:BatchGetItem"},
        "transact_get_items": {"dynamodb:GetItem"},
        "transact_write_items": {TRANSACTION},
        "put_item": {"dynamodb:PutItem"},
        "update_item": {"dynamodb:UpdateItem"},
        "delete_item": {"dynamodb:DeleteItem"},
        "batch_write_item": {"dynamodb:BatchWriteItem"},
        "create_table": {"dynamodb:CreateTable"},
        "describe_table": {"dynamodb:DescribeTable"},
        "delete_table": {"dynamodb:DeleteTable"},
        "update_table": {"dynamodb:UpdateTable"},
        "update_continuous_backups": {"dynamodb:UpdateContinuousBackups"},
        "update_time_to_live": {"dynamodb:UpdateTimeToLive"},
    }.items()
} | {
    ("s3", op): frozenset(actions)
    for op, actions in {
        "put_object": {"s3:PutObject"},
        "get_object": {"s3:GetObject"},
        "head_object": {"s3:GetObject"},
        "delete_object": {"s3:DeleteObject"},
        "delete_objects": {"s3:DeleteObject"},
        "copy_object": {"s3:GetObject", "s3:PutObject"},
        "create_multipart_upload": {"s3:PutObject"},
        "upload_part": {"s3:PutObject"},
        "complete_multipart_upload": {"s3:PutObject"},
        "abort_multipart_upload": {"s3:AbortMultipartUpload"},
        "list_parts": {"s3:ListMultipartUploadParts"},
        "list_objects_v2": {"s3:ListBucket"},
        "list_multipart_uploads": {"s3:ListBucketMultipartUploads"},
        "head_bucket": {"s3:ListBucket"},
        "create_bucket": {"s3:CreateBucket"},
        "delete_bucket": {"s3:DeleteBucket"},
        "put_bucket_lifecycle_configuration": {"s3:PutLifecycleConfiguration"},
        "get_bucket_lifecycle_configuration": {"s3:GetLifecycleConfiguration"},
        "put_bucket_encryption": {"s3:PutEncryptionConfiguration"},
        "put_public_access_block": {"s3:PutBucketPublicAccessBlock"},
        "put_bucket_versioning": {"s3:PutBucketVersioning"},
    }.items()
}
#: The kinds of action inside TransactItems -> the IAM action each is authorised as.
TRANSACTION_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}
#: Operations of create_schema / drop_schema and of the operator's checks (``ping``:
#: DescribeTable, HeadBucket; ``verify``: Scan): the admin policy's, never the runtime's.
SCHEMA_OPERATIONS = {
    ("dynamodb", "scan"),
    ("s3", "head_bucket"),
    ("dynamodb", "create_table"),
    ("dynamodb", "describe_table"),
    ("dynamodb", "delete_table"),
    ("dynamodb", "update_table"),
    ("dynamodb", "update_continuous_backups"),
    ("dynamodb", "update_time_to_live"),
    ("s3", "create_bucket"),
    ("s3", "delete_bucket"),
    ("s3", "put_bucket_lifecycle_configuration"),
    ("s3", "delete_objects"),
    ("s3", "put_bucket_encryption"),
    ("s3", "put_public_access_block"),
    ("s3", "put_bucket_versioning"),
}


# -- scanning the code --------------------------------------------------------------------


def client_calls(source: str) -> set[tuple[str, str]]:
    """``(service, operation)`` of every call on a DynamoDB or S3 client in ``source``."""
    calls: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        service = CLIENT_NAMES.get(_last_name(node.func.value) or "")
        operation = node.func.attr
        if service is None or operation in NOT_OPERATIONS or operation.startswith("_"):
            continue
        if operation == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
            operation = str(node.args[0].value)
        calls.add((service, operation))
    return calls


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def transaction_kinds(source: str) -> set[str]:
    """Keys of dict literals naming a TransactItems action (``{"Put": {...}}``)."""
    kinds: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and key.value in TRANSACTION_ACTIONS:
                    kinds.add(str(key.value))
    return kinds


def package_sources() -> Iterator[str]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.read_text()


def unmapped(calls: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    return {call for call in calls if call not in ACTIONS}


def required_actions(calls: Iterable[tuple[str, str]], kinds: Iterable[str]) -> set[str]:
    actions: set[str] = set()
    for call in calls:
        for action in ACTIONS[call]:
            if action == TRANSACTION:
                actions.update(TRANSACTION_ACTIONS[kind] for kind in kinds)
            else:
                actions.add(action)
    return actions


# -- reading the policies -----------------------------------------------------------------


def load_policy(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy["Statement"]
    return found if isinstance(found, list) else [found]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def granted_patterns(*policies: dict[str, Any]) -> set[str]:
    return {
        pattern
        for policy in policies
        for statement in statements(policy)
        if statement["Effect"] == "Allow"
        for pattern in _as_list(statement["Action"])
    }


def missing_actions(needed: Iterable[str], *policies: dict[str, Any]) -> set[str]:
    patterns = granted_patterns(*policies)
    return {
        action
        for action in needed
        if not any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)
    }


@pytest.fixture(scope="module")
def code() -> tuple[set[tuple[str, str]], set[str]]:
    calls: set[tuple[str, str]] = set()
    kinds: set[str] = set()
    for source in package_sources():
        calls |= client_calls(source)
        kinds |= transaction_kinds(source)
    return calls, kinds


# -- the tests ----------------------------------------------------------------------------


def test_the_scan_finds_the_calls_the_library_is_known_to_make(
    code: tuple[set[tuple[str, str]], set[str]],
) -> None:
    calls, kinds = code
    known = {
        ("dynamodb", "transact_write_items"),
        ("dynamodb", "get_item"),
        ("dynamodb", "query"),
        ("dynamodb", "create_table"),
        ("dynamodb", "describe_table"),
        ("dynamodb", "delete_table"),
        ("s3", "create_bucket"),
        ("s3", "delete_bucket"),
        ("s3", "list_objects_v2"),
        ("s3", "delete_objects"),
        ("s3", "list_multipart_uploads"),
        ("s3", "abort_multipart_upload"),
    }
    assert known <= calls, f"the scan missed {known - calls}: did the client names change?"
    assert {"Put", "Update"} <= kinds


def test_every_operation_the_code_calls_has_iam_actions(
    code: tuple[set[tuple[str, str]], set[str]],
) -> None:
    missing = unmapped(code[0])
    assert not missing, (
        f"the package calls {sorted(missing)} which tests/test_iam_policy.py does not know: "
        "add each to ACTIONS (and SCHEMA_OPERATIONS if it is schema management), then grant "
        "its actions in ops/iam-policy-runtime.json or ops/iam-policy-admin.json"
    )


def test_the_policies_grant_every_action_the_code_needs(
    code: tuple[set[tuple[str, str]], set[str]],
) -> None:
    needed = required_actions(*code)
    missing = missing_actions(needed, load_policy(RUNTIME_POLICY), load_policy(ADMIN_POLICY))
    assert not missing, f"the code needs {sorted(missing)}; no policy in ops/ grants them"


def test_the_runtime_policy_grants_exactly_the_data_path(
    code: tuple[set[tuple[str, str]], set[str]],
) -> None:
    calls, kinds = code
    data_path = required_actions({c for c in calls if c not in SCHEMA_OPERATIONS}, kinds)
    runtime = load_policy(RUNTIME_POLICY)
    granted = granted_patterns(runtime)
    assert not missing_actions(data_path, runtime)
    assert granted == data_path, f"beyond the data path: {sorted(granted - data_path)}"


def test_the_admin_policy_covers_schema_management(
    code: tuple[set[tuple[str, str]], set[str]],
) -> None:
    calls, kinds = code
    schema = required_actions({c for c in calls if c in SCHEMA_OPERATIONS}, kinds)
    assert not missing_actions(schema, load_policy(ADMIN_POLICY))


def test_policies_are_scoped_to_the_table_and_bucket() -> None:
    for path in (RUNTIME_POLICY, ADMIN_POLICY):
        policy = load_policy(path)
        assert policy["Version"] == "2012-10-17"
        for statement in statements(policy):
            assert statement["Effect"] == "Allow" and "NotAction" not in statement
            assert all("*" not in action for action in _as_list(statement["Action"]))
            for resource in _as_list(statement["Resource"]):
                assert resource == "${TableArn}" or resource.startswith(
                    "arn:aws:s3:::${BucketName}"
                ), f"{path.name}: {resource}"
    objects = [s for s in statements(load_policy(RUNTIME_POLICY)) if "s3:GetObject" in s["Action"]]
    assert [s["Resource"] for s in objects] == ["arn:aws:s3:::${BucketName}/${KeyPrefix}*"]


def test_the_check_fails_when_the_code_calls_an_action_the_policy_lacks() -> None:
    """Self-test on synthetic code: a new call the policies do not grant is caught."""
    source = (
        "async def sneaky(self):\n"
        "    await self._dynamodb.batch_write_item(RequestItems={})\n"
        "    await self._s3.get_object(Bucket='b', Key='k')\n"
        "    await clients.s3.select_object_content(Bucket='b')\n"
        "    items = [{'ConditionCheck': {'Key': {}}}]\n"
        "    await self._dynamodb.transact_write_items(TransactItems=items)\n"
    )
    calls = client_calls(source)
    assert calls == {
        ("dynamodb", "batch_write_item"),
        ("s3", "get_object"),
        ("s3", "select_object_content"),
        ("dynamodb", "transact_write_items"),
    }
    assert unmapped(calls) == {("s3", "select_object_content")}
    needed = required_actions(calls - unmapped(calls), transaction_kinds(source))
    missing = missing_actions(needed, load_policy(RUNTIME_POLICY), load_policy(ADMIN_POLICY))
    assert missing == {"dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem"}


# -- CloudFormation -----------------------------------------------------------------------


class CloudFormationLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short-form tags as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CloudFormationLoader)  # type: ignore[no-any-return]


def test_template_table_and_bucket(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    table = resources["Table"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "N"),
    }
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
        ("pk", "HASH"),
        ("sk", "RANGE"),
    ]
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionProtectionEnabled"] is True

    bucket = resources["Bucket"]["Properties"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    (deny,) = resources["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _placeholders(value: Any) -> Any:
    """Render the template's intrinsics as the policy files' ${...} placeholders."""
    if isinstance(value, list):
        return [_placeholders(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value == {"Fn::GetAtt": ["Table", "Arn"]}:
        return "${TableArn}"
    if value == {"Ref": "KeyPrefix"}:
        return "${KeyPrefix}"
    if set(value) == {"Fn::Sub"}:
        text = str(value["Fn::Sub"])
        return text.replace("${AWS::Partition}", "aws").replace("${Bucket}", "${BucketName}")
    return {k: _placeholders(v) for k, v in value.items()}


def test_template_managed_policy_is_the_runtime_policy(template: dict[str, Any]) -> None:
    managed = template["Resources"]["RuntimePolicy"]
    assert managed["Type"] == "AWS::IAM::ManagedPolicy"
    document = _placeholders(managed["Properties"]["PolicyDocument"])
    assert document == load_policy(RUNTIME_POLICY)


@pytest.mark.skipif(shutil.which("cfn-lint") is None and not (ROOT / ".venv/bin/cfn-lint").exists(),
                    reason="cfn-lint is not installed")  # fmt: skip
def test_template_passes_cfn_lint() -> None:
    executable = shutil.which("cfn-lint") or str(ROOT / ".venv/bin/cfn-lint")
    done = subprocess.run(
        [executable, str(TEMPLATE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
