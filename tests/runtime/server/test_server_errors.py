"""Every failure path answers with OpenAI's error body; FastAPI's 422 becomes a 400."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from runtime.server.errors import APIError, install_error_handlers
from runtime.server.protocol import CompletionRequest


@pytest.fixture(scope="module")
def client():
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(req: CompletionRequest) -> dict:
        if req.prompt == "missing":
            raise APIError("no such thing", status=404, param="prompt")
        if req.prompt == "crash":
            raise RuntimeError("boom")
        return {"prompt": req.prompt}

    return TestClient(app, raise_server_exceptions=False)


def assert_openai_error(response, status, param=None, contains=""):
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["param"] == param and contains in error["message"]
    return error


def test_field_error_is_400_naming_the_field(client):
    r = client.post("/echo", json={"prompt": "x", "max_tokens": -3})
    error = assert_openai_error(r, 400, "max_tokens", "max_tokens")
    assert error["type"] == "BadRequestError"


def test_malformed_json_is_400(client):
    r = client.post("/echo", content=b'{"prompt": ', headers={"content-type": "application/json"})
    assert_openai_error(r, 400, None, "not valid JSON")


def test_model_level_check_is_400_without_param(client):
    assert_openai_error(client.post("/echo", json={"prompt": ""}), 400, None, "must not be empty")


def test_route_errors_keep_their_status(client):
    assert assert_openai_error(client.post("/echo", json={"prompt": "missing"}), 404, "prompt")["type"] == "NotFoundError"
    assert_openai_error(client.get("/nowhere"), 404)
    assert_openai_error(client.post("/echo", json={"prompt": "crash"}), 500, None, "boom")
    assert client.post("/echo", json={"prompt": "fine"}).json() == {"prompt": "fine"}
