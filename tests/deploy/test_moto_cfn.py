"""The moto deploy harness's own logic: what it leaves out of a template, how it zips assets."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from tests.deploy.moto_cfn import without_unsupported, zip_directory

pytestmark = pytest.mark.deploy


def test_unsupported_resources_and_what_refers_to_them_are_left_out() -> None:
    template = {
        "Resources": {
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["Queue", "Name"]}}]}},
            "Uses": {"Type": "AWS::SSM::Parameter", "Properties": {
                "Value": {"Fn::Sub": "${Alarm.Arn} fires"}}},
            "After": {"Type": "AWS::SQS::Queue", "DependsOn": ["Alarm", "Queue"], "Properties": {
                "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": ["Queue", "Arn"]}}}},
            "Later": {"Type": "AWS::SQS::Queue", "DependsOn": "Alarm", "Properties": {}},
        },
        "Outputs": {"AlarmArn": {"Value": {"Fn::GetAtt": ["Alarm", "Arn"]}},
                    "Said": {"Value": {"Ref": "Uses"}}, "QueueUrl": {"Value": {"Ref": "Queue"}}},
    }
    kept, removed, removed_outputs = without_unsupported(template)
    assert removed == {"Alarm": "AWS::CloudWatch::Alarm", "Uses": "AWS::SSM::Parameter"}
    assert removed_outputs == ["AlarmArn", "Said"]
    assert sorted(kept["Resources"]) == ["After", "Later", "Queue"]
    assert kept["Resources"]["After"]["DependsOn"] == ["Queue"]
    assert "DependsOn" not in kept["Resources"]["Later"]
    assert list(kept["Outputs"]) == ["QueueUrl"]
    assert "Alarm" in template["Resources"]  # the caller's template is left as it was


def test_zipped_assets_depend_only_on_paths_contents_and_modes(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for root, mtime in ((first, 1_000_000), (second, 2_000_000)):
        (root / "pkg").mkdir(parents=True)
        for path, text in ((root / "pkg" / "mod.py", "x = 1\n"), (root / "run", "#!/bin/sh\n")):
            path.write_text(text)
            os.utime(path, (mtime, mtime))
        (root / "run").chmod(0o755)
    assert zip_directory(first) == zip_directory(second)
    with zipfile.ZipFile(io.BytesIO(zip_directory(first))) as archive:
        assert archive.namelist() == ["pkg/mod.py", "run"]
        assert archive.getinfo("run").external_attr >> 16 == 0o100755
    (second / "run").chmod(0o644)
    assert zip_directory(first) != zip_directory(second)
