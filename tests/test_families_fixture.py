"""The families ground-truth fixture (tools/measure/families_kv.py) is well-formed.

memsym does not read these families yet (issue 13); this only checks that every record
names a saved config that exists, that every saved config names its source, and that the
measured numbers are present and integral where they must be.
"""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "families_ground_truth.json")
CONFIGS = os.path.join(ROOT, "tools", "measure", "configs")


def _fixture():
    with open(FIXTURE) as f:
        return json.load(f)


def test_every_record_names_an_existing_config_file():
    models = _fixture()["models"]
    assert models
    for mid, rec in models.items():
        path = os.path.join(ROOT, rec["config_file"])
        assert os.path.isfile(path), (mid, rec["config_file"])
        with open(path) as f:
            saved = json.load(f)
        assert saved["id"] == mid
        assert saved["hf_repo"] == rec["hf_repo"]


def test_every_saved_config_has_a_source_and_a_model_type():
    for name in sorted(os.listdir(CONFIGS)):
        with open(os.path.join(CONFIGS, name)) as f:
            saved = json.load(f)
        assert name == saved["id"] + ".json"
        assert saved["source"].strip(), name
        assert saved["config"]["model_type"], name


def test_records_carry_exact_parameter_and_cache_numbers():
    data = _fixture()
    assert data["transformers_version"]
    for mid, rec in data["models"].items():
        assert isinstance(rec["parameters"], int) and rec["parameters"] > 0, mid
        assert sum(rec["parameters_by_top_module"].values()) == rec["parameters"], mid
        if "cache" in rec:
            assert isinstance(rec["kv_bytes_per_token"], int), mid
            assert isinstance(rec["state_bytes_per_sequence"], int), mid
            counts = rec["cache"]["full_depth_layer_type_counts"]
            per_type = rec["cache"]["per_layer_type"]
            total = sum(per_type[t]["bytes_per_token"] * n for t, n in counts.items() if t in per_type)
            assert total == rec["kv_bytes_per_token"], mid
