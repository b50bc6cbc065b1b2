"""The plan table's config column: what a layer above the graph set, each with its layer."""

from __future__ import annotations

from fleet.cli.app_deploy import _config


def test_config_column_names_each_value_a_layer_set_and_its_layer() -> None:
    summary = {
        "device": "d1", "app": "blur", "version": "1.0.0", "refused": None,
        "parameters": {
            "min_score": {"value": 0.7, "layer": "host", "source": "hosts.yaml:4"},
            "blur": {"value": True, "layer": "graph", "source": "graph.json"},
        },
        "cameras": {
            "front": {"cameras": ["cam-1", "cam-2"], "set_as": "tag:door", "layer": "cli",
                      "source": "-e"},
            "back": {"cameras": [], "set_as": None, "layer": "graph", "source": "graph.json"},
        },
    }
    assert _config(summary) == "min_score=0.7 (host), front=cam-1,cam-2 (cli)"


def test_config_column_says_defaults_when_only_the_graph_set_values() -> None:
    only_graph = {"parameters": {"x": {"value": 1, "layer": "graph", "source": "g"}},
                  "cameras": {}}
    assert _config(only_graph) == "defaults"
    assert _config(None) == "defaults"
