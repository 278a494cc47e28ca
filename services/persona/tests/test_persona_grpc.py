"""persona's gRPC API on a real grpc.aio server (127.0.0.1, ephemeral port), as vc-start calls it."""

from __future__ import annotations


import boto3
import grpc
import pytest
from botocore.config import Config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mf.persona.v1 import persona_pb2, persona_pb2_grpc
from persona_service.grpc_api import SERVICE_NAME, build_grpc_server
from persona_service.store import PersonaStore
from servicekit.health import Health


@pytest.fixture
async def grpc_env(store, verifier):
    readiness = Health({})
    server, port, health_servicer = build_grpc_server(store, verifier, readiness, bind="127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield persona_pb2_grpc.PersonaServiceStub(channel), health_pb2_grpc.HealthStub(channel), readiness, health_servicer
    await channel.close()
    await server.stop(0)


@pytest.fixture
def auth(make_token):
    def metadata(sub: str = "user-a") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {make_token(sub)}"),)

    return metadata


async def test_get_and_list_personas(grpc_env, store, auth):
    stub, *_ = grpc_env
    ada = store.create("user-a", "Ada", {"voice": "alto"}, 2)
    store.create("user-b", "Bob's", {}, 1)

    got = await stub.GetPersona(persona_pb2.GetPersonaRequest(persona_id=ada.persona_id), metadata=auth())
    assert (got.persona_id, got.display_name, dict(got.attributes), got.max_sessions, got.reserved) == (
        ada.persona_id,
        "Ada",
        {"voice": "alto"},
        2,
        0,
    )
    assert got.created_at.seconds == int(store._clock())

    listed = await stub.ListPersonas(persona_pb2.ListPersonasRequest(), metadata=auth())
    assert [p.persona_id for p in listed.items] == [ada.persona_id]


async def test_calls_without_a_valid_token_are_unauthenticated(grpc_env, store, make_token):
    stub, *_ = grpc_env
    ada = store.create("user-a", "Ada", {}, 1)
    for metadata in ((), (("authorization", "Bearer not-a-jwt"),), (("authorization", f"Bearer {make_token('user-a', iss='evil')}"),)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ReserveSlot(persona_pb2.ReserveSlotRequest(persona_id=ada.persona_id, session_id="s1"), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert store.get(ada.persona_id, "user-a").reserved == 0


async def test_another_owners_persona_is_not_found(grpc_env, store, auth):
    stub, *_ = grpc_env
    ada = store.create("user-a", "Ada", {}, 1)
    for call in (
        stub.GetPersona(persona_pb2.GetPersonaRequest(persona_id=ada.persona_id), metadata=auth("user-b")),
        stub.ReserveSlot(persona_pb2.ReserveSlotRequest(persona_id=ada.persona_id, session_id="s1"), metadata=auth("user-b")),
        stub.GetPersona(persona_pb2.GetPersonaRequest(persona_id="no-such-persona"), metadata=auth()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reserve_until_full_then_release(grpc_env, store, auth):
    stub, *_ = grpc_env
    ada = store.create("user-a", "Ada", {}, 1)
    request = persona_pb2.ReserveSlotRequest(persona_id=ada.persona_id, session_id="s1")
    held = await stub.ReserveSlot(request, metadata=auth())
    assert held.status == persona_pb2.RESERVATION_STATUS_HELD
    assert held.expires_at.seconds == int(store._clock()) + 120
    assert (await stub.ReserveSlot(request, metadata=auth())) == held  # a retried call gets the same hold

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReserveSlot(persona_pb2.ReserveSlotRequest(persona_id=ada.persona_id, session_id="s2"), metadata=auth())
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    release = persona_pb2.ReleaseSlotRequest(persona_id=ada.persona_id, session_id="s1", reason="event_publish_failed")
    for _ in range(2):  # idempotent
        released = await stub.ReleaseSlot(release, metadata=auth())
        assert (released.status, released.reason, released.HasField("expires_at")) == (
            persona_pb2.RESERVATION_STATUS_RELEASED,
            "event_publish_failed",
            False,
        )
    unknown = await stub.ReleaseSlot(persona_pb2.ReleaseSlotRequest(persona_id=ada.persona_id, session_id="never"), metadata=auth())
    assert unknown.status == persona_pb2.RESERVATION_STATUS_RELEASED
    assert (await stub.ReserveSlot(persona_pb2.ReserveSlotRequest(persona_id=ada.persona_id, session_id="s2"), metadata=auth())).status == (
        persona_pb2.RESERVATION_STATUS_HELD
    )


@pytest.mark.parametrize("reason", ["Released by ops", "x" * 65, "ends_with_newline\n"])
async def test_a_release_reason_other_than_snake_case_is_rejected_and_nothing_released(grpc_env, store, auth, reason):
    """The reason travels in SlotReleased, whose contract wants snake_case: it is checked where it comes in."""
    stub, *_ = grpc_env
    ada = store.create("user-a", "Ada", {}, 1)
    await stub.ReserveSlot(persona_pb2.ReserveSlotRequest(persona_id=ada.persona_id, session_id="s1"), metadata=auth())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReleaseSlot(persona_pb2.ReleaseSlotRequest(persona_id=ada.persona_id, session_id="s1", reason=reason), metadata=auth())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert store.get_reservation(ada.persona_id, "s1").status == "HELD"


async def test_invalid_session_id_is_rejected(grpc_env, store, auth):
    stub, *_ = grpc_env
    ada = store.create("user-a", "Ada", {}, 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReserveSlot(persona_pb2.ReserveSlotRequest(persona_id=ada.persona_id, session_id=""), metadata=auth())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_service_follows_readiness(grpc_env):
    _, health, readiness, _ = grpc_env
    for service in ("", SERVICE_NAME):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING

    readiness.mark_draining()  # what SIGTERM does: the very next Check sees it, despite the 1 s probe cache
    response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_is_not_serving_when_a_dependency_fails(store, verifier):
    async def dynamodb_down() -> None:
        raise ConnectionError("dynamodb unreachable")

    server, port, _ = build_grpc_server(store, verifier, Health({"dynamodb": dynamodb_down}), bind="127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(0)


async def test_unreachable_dynamodb_is_reported_as_unavailable(verifier, auth):
    # UNAVAILABLE tells vc-start the outcome is unknown (it may retry: ReserveSlot is idempotent).
    dead = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    server, port, _ = build_grpc_server(PersonaStore(dead, "mf-persona-test"), verifier, Health({}), bind="127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = persona_pb2_grpc.PersonaServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ReserveSlot(persona_pb2.ReserveSlotRequest(persona_id="p1", session_id="s1"), metadata=auth())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_a_list_that_dynamodb_keeps_throttling_is_unavailable_not_aborted(grpc_env, store, auth, monkeypatch, caplog):
    # DynamoDB leaves a batch read unprocessed while it throttles: retry later (UNAVAILABLE), not a conflict (ABORTED).
    stub, *_ = grpc_env
    store.create("user-a", "Ada", {}, 1)
    monkeypatch.setattr(store._db, "batch_get_item", lambda RequestItems: {"Responses": {}, "UnprocessedKeys": RequestItems})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListPersonas(persona_pb2.ListPersonasRequest(), metadata=auth())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # What runbooks/table-errors.md's query counts the failed requests by.
    assert [r.aws_error for r in caplog.records if r.getMessage() == "storage unavailable"] == ["UnprocessedKeys"]


async def test_a_reserve_dynamodb_cancels_for_throttling_is_unavailable_not_aborted(grpc_env, store, auth, cancel_transactions):
    # vc-start retries UNAVAILABLE (ReserveSlot is idempotent); ABORTED would cancel the session as persona_unavailable.
    stub, *_ = grpc_env
    ada = store.create("user-a", "Ada", {}, 1)
    transactions = cancel_transactions("None", "ThrottlingError")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReserveSlot(persona_pb2.ReserveSlotRequest(persona_id=ada.persona_id, session_id="s1"), metadata=auth())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert transactions.sent == 1
    assert store.get(ada.persona_id, "user-a").reserved == 0


async def test_grpc_server_listens_on_bind_host_every_interface_unless_set(settings, dynamodb, verifier, monkeypatch, listening):
    # What `python -m persona_service` binds: servicekit.server.run calls this factory with the settings. Real
    # sockets on ephemeral ports, read back from the process's listening sockets.
    from persona_service.app import PersonaClients, create_app
    from persona_service.settings import PersonaSettings

    monkeypatch.delenv("BIND_HOST", raising=False)
    app = create_app(settings, clients=PersonaClients(dynamodb=dynamodb, verifier=verifier))
    default = PersonaSettings(table_name=settings.table_name, grpc_port=0)
    listened = []
    for bind_host in (None, "127.0.0.1"):
        before = listening()
        server = app.state.grpc_server_factory(default if bind_host is None else default.model_copy(update={"bind_host": bind_host}))
        await server.start()
        try:
            listened.append(sorted(host for host, _ in listening() - before))
        finally:
            app.state.grpc_health.stop_refreshing()
            await server.stop(0)
    assert listened == [["0.0.0.0"], ["127.0.0.1"]]


async def test_list_personas_pages_through_every_persona_exactly_once(grpc_env, store, auth):
    stub, *_ = grpc_env
    ids = sorted(store.create("user-a", f"P{i}", {}, 1).persona_id for i in range(5))
    store.create("user-b", "Bob's", {}, 1)

    listed, sizes, token = [], [], ""
    while True:
        page = await stub.ListPersonas(persona_pb2.ListPersonasRequest(page_size=2, page_token=token), metadata=auth())
        listed += [p.persona_id for p in page.items]
        sizes.append(len(page.items))
        token = page.next_page_token
        if not token:
            break
    assert (listed, sizes) == (ids, [2, 2, 1])

    # page_size 0 is the default page, above the maximum the maximum: here every persona, no next page.
    for page_size in (0, 1000):
        page = await stub.ListPersonas(persona_pb2.ListPersonasRequest(page_size=page_size), metadata=auth())
        assert [p.persona_id for p in page.items] == ids and page.next_page_token == ""


@pytest.mark.parametrize("request_fields", [{"page_size": -1}, {"page_token": "not-a-token"}], ids=["negative-size", "bad-token"])
async def test_list_personas_rejects_a_bad_page_request(grpc_env, store, auth, request_fields):
    stub, *_ = grpc_env
    store.create("user-a", "Ada", {}, 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListPersonas(persona_pb2.ListPersonasRequest(**request_fields), metadata=auth())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_full_page_of_the_largest_personas_fits_grpcs_default_message_size():
    """gRPC refuses messages above 4 MiB by default: the largest page the API can answer must stay well below it."""
    from persona_service import store as st
    from persona_service.grpc_api import persona_message

    largest = st.Persona(
        persona_id="p" * 128, owner="o", display_name="d" * 100,
        attributes={f"{i:02d}".ljust(64, "k"): "v" * 256 for i in range(20)},  # the API's limits (models.py)
        max_sessions=10, reserved=10, created_at="2026-01-01T00:00:00.000+00:00", updated_at="2026-01-01T00:00:00.000+00:00",
    )
    page = persona_pb2.ListPersonasResponse(items=[persona_message(largest)] * st.MAX_PAGE_SIZE, next_page_token="t" * 512)
    assert page.ByteSize() < 4 * 1024 * 1024 / 2
