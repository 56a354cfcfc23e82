import pytest

from pixdedup.config import load_config
from pixdedup.errors import ConfigError


def test_precedence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[scan]\nworkers = 3\nmin-similarity = 0.9\nmode = 'exact'\n")  # the old name
    env = {"PIXDEDUP_WORKERS": "5", "PIXDEDUP_MIN_SIMILARITY": "0.95"}
    c = load_config({"workers": 7, "mode": None}, str(cfg), env)
    assert (c.workers, c.min_cosine_similarity, c.mode) == (7, 0.95, "exact")
    assert load_config({}, str(cfg), {}).workers == 3
    assert load_config({}, None, {"PIXDEDUP_MIN_COSINE_SIMILARITY": "0.7"}).min_cosine_similarity == 0.7


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"mode": "fuzzy"}, "unknown mode 'fuzzy'; valid modes: near, exact"),
        ({"keep": "prettiest"}, "unknown keeper rule 'prettiest'; valid names:"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"min_cosine_similarity": 2.0}, "min_cosine_similarity must be between 0 and 1"),
    ],
)
def test_invalid_values(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_config(flags, env={})


def test_bad_env_value():
    with pytest.raises(ConfigError, match="invalid value for workers"):
        load_config({}, env={"PIXDEDUP_WORKERS": "many"})
