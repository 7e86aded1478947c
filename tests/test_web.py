"""The one HTTP idiom, without a database: route tables (404, 405, path parameters, the guard, `/health`), the one
token guard, the one body parser, and the same entry in every function."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
from pydantic import BaseModel, SecretStr

from raiox.errors import InvalidInput, NotAuthenticated, NotConfigured, NotFound, Unprocessable
from raiox.settings import Settings
from raiox.web.http import HttpRequest, MethodNotAllowed, TokenGuard, parse_body
from raiox.web.routing import Route, Router

REPO = Path(__file__).resolve().parents[1]


def services(**settings: Any) -> Any:
    """What a guard and `/health` read of the services: the settings, and a deep check that finds all well."""
    return SimpleNamespace(settings=Settings.given(**settings), check=lambda storage: {"database": "ok"})


def signed_in(request: HttpRequest, services: Any) -> str:
    if request.headers.get("authorization") != "Bearer ok":
        raise NotAuthenticated("sign in first")
    return "ana"


TABLE = Router([
    Route("POST", "/login", lambda request, services: {"public": True}, public=True),
    Route("GET", "/cases/{case_id}", lambda request, services, caller, case_id: {"by": caller, "case": case_id}),
    Route("POST", "/cases/{case_id}", lambda request, services, caller, case_id: {"posted": case_id}),
], guard=signed_in)


def test_a_route_table_matches_method_and_path_and_passes_the_guards_caller() -> None:
    ok = {"authorization": "Bearer ok"}
    assert TABLE(HttpRequest(method="GET", path="/cases/7/", headers=ok), services()).body == {"by": "ana", "case": 7}
    assert TABLE(HttpRequest(method="POST", path="login"), services()).body == {"public": True}
    with pytest.raises(NotAuthenticated):
        TABLE(HttpRequest(method="GET", path="/cases/7"), services())
    with pytest.raises(NotFound, match="no such endpoint: /cases/x"):
        TABLE(HttpRequest(method="GET", path="/cases/x", headers=ok), services())
    with pytest.raises(MethodNotAllowed) as refused:
        TABLE(HttpRequest(method="DELETE", path="/cases/7", headers=ok), services())
    assert refused.value.allowed == ("GET", "POST")


def test_check_head_refuses_before_the_body_and_the_trusted_call_skips_the_guard() -> None:
    TABLE.check_head(HttpRequest(method="POST", path="/login"), services())  # public: nothing to check
    with pytest.raises(NotAuthenticated):
        TABLE.check_head(HttpRequest(method="POST", path="/cases/1"), services())
    with pytest.raises(MethodNotAllowed):
        TABLE.check_head(HttpRequest(method="PUT", path="/login"), services())
    open_table = Router([Route("POST", "/", lambda request, services: {"ran": True})], guard=signed_in)
    assert open_table.trusted(HttpRequest(method="POST"), services()).body == {"ran": True}


def test_every_table_answers_health_and_the_deep_check_only_past_the_guard() -> None:
    assert TABLE(HttpRequest(method="GET", path="/health"), services()).body == {"status": "ok"}
    with pytest.raises(NotAuthenticated):
        TABLE(HttpRequest(method="GET", path="/health", query={"deep": "1"}), services())
    deep = TABLE(HttpRequest(method="GET", path="/health", query={"deep": "1"},
                             headers={"authorization": "Bearer ok"}), services())
    assert (deep.status, deep.body) == (200, {"status": "ok", "database": "ok"})


def test_the_token_guard() -> None:
    bearer, in_query = TokenGuard("EMBED_TOKEN"), TokenGuard("WEBHOOK_TOKEN", in_query=True)
    configured = services(embed_token=SecretStr("s3cret"), webhook_token=SecretStr("s3cret"))
    bearer(HttpRequest(headers={"authorization": "Bearer s3cret"}), configured)
    in_query(HttpRequest(query={"token": "s3cret"}), configured)
    with pytest.raises(NotAuthenticated, match="^missing token$"):
        bearer(HttpRequest(query={"token": "s3cret"}), configured)  # a bearer token is not read from the query
    with pytest.raises(NotAuthenticated, match="^wrong token$"):
        in_query(HttpRequest(query={"token": "s3cre"}), configured)
    with pytest.raises(NotConfigured, match="set EMBED_TOKEN"):
        bearer(HttpRequest(headers={"authorization": "Bearer s3cret"}), services(raiox_env="prod"))
    bearer(HttpRequest(), services(raiox_env="dev"))  # unset in dev mode: open
    with pytest.raises(ValueError, match="no setting EMBED_TOKNE"):
        TokenGuard("EMBED_TOKNE")


def test_is_dev() -> None:
    assert Settings.given(raiox_env="dev").is_dev and not Settings.given(raiox_env="prod").is_dev


class Sweep(BaseModel):
    sweep: Literal[True]


def test_one_body_parser() -> None:
    assert parse_body(HttpRequest(body=b'{"sweep": true, "other": 1}'), Sweep).sweep is True
    with pytest.raises(InvalidInput):
        parse_body(HttpRequest(body=b"{not json"), Sweep)
    with pytest.raises(Unprocessable, match="JSON object"):
        parse_body(HttpRequest(body=b"[1]"), Sweep)
    with pytest.raises(Unprocessable, match="^sweep: Field required$"):
        parse_body(HttpRequest(body=b"  "), Sweep)  # an empty body is {}
    with pytest.raises(InvalidInput, match="^sweep: "):
        parse_body(HttpRequest(body=b'{"sweep": "sometimes"}'), Sweep, refusal=InvalidInput)


@pytest.mark.parametrize("function", ["webhook", "embed", "notify", "approve"])
def test_every_function_has_the_same_entries(function: str) -> None:
    """`main` hands the event to `do_entry`, the functions-framework entry the request to `flask_entry`, each with
    the function's `Function` and nothing else."""
    for name, adapter, arguments in (("__main__.py", "do_entry", ["event", "context"]),
                                     (f"{function}_http.py", "flask_entry", ["request"])):
        tree = ast.parse((REPO / "functions" / function / name).read_text())
        [entry] = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
        [statement] = entry.body
        assert isinstance(statement, ast.Return) and isinstance(statement.value, ast.Call)
        call = statement.value
        assert ast.unparse(call.func) == adapter
        assert [ast.unparse(arg) for arg in call.args] == [function.upper(), *arguments]
