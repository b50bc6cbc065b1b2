"""`assert` takes values the engine rendered: booleans or their text, nothing else."""

from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.play import operations
from fleet.play.operations import OpContext
from fleet.project import Project


def run(tmp_path, **arguments):
    ctx = OpContext(Project.locate(tmp_path), None)
    return operations.find("assert")(ctx, **arguments)


def test_true_values_pass_and_false_ones_name_their_index(tmp_path):
    assert not run(tmp_path, that=[True, "True", 1]).failed
    out = run(tmp_path, that=[True, "False", 0])
    assert out.failed and out.msg == "assertion failed: that[1], that[2]"
    assert run(tmp_path, that=[False], fail_msg="disk too full").msg == "disk too full"


def test_an_unrendered_expression_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"that\[0\] is 'result.ok'"):
        run(tmp_path, that=["result.ok"])


def test_every_builtin_is_registered_under_its_name():
    for name in operations.BUILTIN:
        assert operations.find(name).name == name
