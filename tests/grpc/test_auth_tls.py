"""Bearer-token auth and TLS on the gRPC server, through the real grpcurl."""

import pytest
from pydantic import SecretStr

from shared.grpc.config import GrpcSettings
from tests.grpc.conftest import grpcurl, register_test_handlers, start_server, write_protoset

TOKEN = "s3cret-token"
LIST = "neopulse.v1.IngestionService/ListInstruments"


@pytest.fixture
async def token_addr(bus):
    register_test_handlers(bus)
    server = await start_server(bus, GrpcSettings(auth_token=SecretStr(TOKEN)))
    yield f"127.0.0.1:{server.bound_port}"
    await server.stop(0)


@pytest.fixture
def protoset(tmp_path) -> list[str]:
    from grpc_health.v1 import health_pb2

    from shared.contracts import ingestion_pb2

    return ["-protoset", write_protoset(tmp_path / "set.pb", ingestion_pb2, health_pb2)]


async def test_rpc_without_a_token_is_unauthenticated(token_addr, protoset):
    result = await grpcurl("-plaintext", *protoset, token_addr, LIST)

    assert "Code: Unauthenticated" in result.err


async def test_rpc_with_a_wrong_token_is_unauthenticated(token_addr, protoset):
    result = await grpcurl("-plaintext", *protoset, "-H", "authorization: Bearer wrong", token_addr, LIST)

    assert "Code: Unauthenticated" in result.err


async def test_rpc_with_the_right_token_succeeds(token_addr):
    result = await grpcurl("-plaintext", "-H", f"authorization: Bearer {TOKEN}", token_addr, LIST)

    assert result.code == 0, result.err
    assert result.json()["instruments"][0]["token"] == "2885"


async def test_reflection_needs_the_token_too(token_addr):
    result = await grpcurl("-plaintext", token_addr, "list")

    assert result.code != 0
    assert "Unauthenticated" in result.err


async def test_health_check_works_without_a_token(token_addr, protoset):
    result = await grpcurl("-plaintext", *protoset, token_addr, "grpc.health.v1.Health/Check")

    assert result.json() == {"status": "SERVING"}


async def test_tls_server_answers_a_client_that_trusts_its_certificate(bus, cert):
    register_test_handlers(bus)
    server = await start_server(bus, GrpcSettings(tls_cert_file=cert[0], tls_key_file=cert[1]))
    try:
        addr = f"127.0.0.1:{server.bound_port}"
        trusted = await grpcurl("-cacert", str(cert[0]), addr, LIST)
        plaintext = await grpcurl("-plaintext", "-connect-timeout", "1", addr, LIST)
    finally:
        await server.stop(0)

    assert trusted.json()["instruments"][0]["symbol"] == "RELIANCE-EQ"
    assert plaintext.code != 0


def test_tls_needs_both_certificate_and_key():
    from shared.config import load
    from shared.errors import ConfigError

    try:
        with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file"):
            load(GrpcSettings, {"grpc": {"tls_cert_file": "/tmp/cert.pem"}})
    finally:
        load(GrpcSettings, {})  # load() leaves the section on the class; reset it for later tests


@pytest.mark.parametrize(("host", "token", "open_"), [
    ("0.0.0.0", None, True), ("::", None, True), ("10.0.0.5", None, True), ("127.0.0.1", None, False),
    ("localhost", None, False), ("[::1]", None, False), ("0.0.0.0", "t0ken", False)])
def test_served_beyond_this_machine_without_a_token_is_open_to_the_network(host, token, open_):
    settings = GrpcSettings(host=host, auth_token=SecretStr(token) if token else None)

    assert settings.open_to_the_network() == open_


async def test_a_server_open_to_the_network_says_so_in_a_warning(bus, caplog):
    """The image serves on 0.0.0.0: `docker run -p 50051:50051` without a token opened PlaceOrder and
    ReleaseKillSwitch to the network, silently."""
    server = await start_server(bus, GrpcSettings(host="0.0.0.0"))
    try:
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    finally:
        await server.stop(0)

    assert any("gRPC serves beyond this machine with no auth token" in w for w in warned)


def test_live_mode_refuses_grpc_open_to_the_network():
    from services.app.config import AppSettings
    from services.app.monolith import check_live_grpc
    from shared.errors import ConfigError

    live = AppSettings(mode="live", source="kotak")
    with pytest.raises(ConfigError, match="needs \\[grpc\\] auth_token"):
        check_live_grpc(live, GrpcSettings(host="0.0.0.0"))
    check_live_grpc(live, GrpcSettings(host="0.0.0.0", auth_token=SecretStr("t0ken")))
    check_live_grpc(live, GrpcSettings())
    check_live_grpc(AppSettings(), GrpcSettings(host="0.0.0.0"))  # paper: only the warning


async def test_a_token_sent_in_plain_text_beyond_this_machine_is_warned_about(bus, caplog):
    server = await start_server(bus, GrpcSettings(host="0.0.0.0", auth_token=SecretStr("t0ken")))
    try:
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    finally:
        await server.stop(0)

    assert any("its bearer token travels in plain text" in w for w in warned)
