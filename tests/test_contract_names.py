"""Which environment names are secrets, and which request ids are allowed."""

from __future__ import annotations

import pytest

from requiem.contract import is_secret_name, parse_request
from requiem.errors import RequiemError


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "db_password", "AWS_SECRET", "API_KEY", "_KEY",
                                  "AUTHORIZATION", "auth", "Cookie_jar", "GCP_CREDENTIAL",
                                  # spellings a case-insensitive regex took as secret too
                                  "COOK\u0131E_JAR", "X_CREDENT\u0130AL", "API_\u212aEY"])
def test_secret_looking_names_are_secrets(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "KEYBOARD", "MONKEY", "TOKENIZER_PATH",
                                  "LANG", "OAUTH_SCOPE_HINT"])
def test_ordinary_names_are_not(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize("request_id", ["run-1", "A_b-9", "x" * 128])
def test_request_ids_of_the_allowed_characters_pass(request_id: str) -> None:
    assert parse_request({"command": "true", "request_id": request_id}).request_id == request_id


@pytest.mark.parametrize("request_id", ["", "a/b", "../x", "é", "a b", "x" * 129, "run\n"])
def test_other_request_ids_are_refused_by_pointer(request_id: str) -> None:
    with pytest.raises(RequiemError) as refused:
        parse_request({"command": "true", "request_id": request_id})
    assert refused.value.to_json()["error"]["pointer"] == "/request_id"
