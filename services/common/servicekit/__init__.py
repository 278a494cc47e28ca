"""servicekit: the shared library of the reference services (auth, persona, vc-start).

Deviations from / additions to the spec API (all backwards compatible):
- ServiceSettings adds aws_endpoint_url, the backoffs, queue_wait_seconds, trace sampling, instrumentation
  and bind_host: what each means and its default are in services/README.md's table. Breakers and boto3
  clients are cached per settings object; `bind_address(port)` puts a gRPC server on BIND_HOST too.
- ResilientHttpClient accepts `transport=` (tests); `Breaker.state` / `breaker_state` report
  "open" (purgatory itself says "opened"). Retryable 502/503/504 answers are returned as the final
  response once attempts run out; transport errors/time-outs re-raise httpx's exception.
- resilient_grpc_call: `coro_factory` may take one argument, the per-attempt timeout in seconds
  (`lambda timeout: stub.GetPersona(req, timeout=timeout)`); time-outs surface as AioRpcError
  DEADLINE_EXCEEDED. Breakers are looked up by name per settings object.
- JwksVerifier adds `refetch_interval_seconds` (default 30), `max_lifetime_seconds` and `max_stale_seconds`,
  `JwksVerifier.from_settings(settings)` (with its own ResilientHttpClient) and `aclose()`;
  settings.AuthClientSettings holds AUTH_URL, JWT_ISSUER, JWT_AUDIENCE, JWT_MAX_LIFETIME_SECONDS and
  JWKS_MAX_STALE_SECONDS for services that accept auth's tokens. It also refuses an empty `sub` and
  drops RSA keys under 2048 bits from the JWKS. bearer_claims: missing header -> 401 `unauthorized`, bad
  token -> 401 `invalid_token` (the reason is logged, not answered).
- ResilientHttpClient.aclose() may be followed by more requests (a new pool opens), so an app whose
  lifespan closes its clients can be started again.
- dynamo.readiness_check(settings, table_name=None, *, client=None): GetItem of an absent key (writes nothing),
  on threads of its own (request load cannot starve it), one attempt; DynamoDB throttling counts as ready.
  aws.client(name, settings, *, retries=True): retries=False is a client of its own making one attempt per call.
- EventPublisher.publish puts an entry EventBridge rejected with a retryable code (InternalFailure,
  ThrottlingException) again, with the calls' backoff (RETRY_ATTEMPTS, CALL_BUDGET_SECONDS).
- QueueConsumer handlers get (data, envelope) where envelope is the whole EventBridge event; dedupe
  markers carry status IN_PROGRESS|DONE with a lease so a crashed consumer's claim is taken over.
- idempotency: `run_idempotent(store, principal=, key=, request_body=, handler=)` and the FastAPI
  dependency `idempotency_key` (Idempotency-Key header, validated). `handler(run)`: `run.run_id`, the
  same for a retry that takes over an unfinished run, and `run.taken_over` then. 401/403/429 are not
  stored (a retry with a fresh token runs again, as the same run).
- errors.ErrorResponse / error_responses(*statuses) document the error body in OpenAPI; every
  operation also gets a generic "4XX" ErrorResponse entry and 422 uses ErrorResponse.
- A botocore error meaning the store is unavailable (`aws.is_unavailable`: EndpointConnectionError,
  connect/read time-outs, closed connections, throttling or AWS server-error codes) raised from a route
  answers 503 `storage_unavailable` with Retry-After (`aws.retry_after_seconds`: 1 s throttled, 5 s
  otherwise) in every service; other botocore errors stay 500. Non-health operations document the 503.
  `aws.storage_unavailable(retry_after)` is that answer as an ApiError, for a service's own signs of it.
- grpcutil: correlation metadata interceptors and ServiceServerInterceptor (restores the correlation
  id, records rpc.server.duration); configure_telemetry patches grpc.aio.server to add it.
- Health.on_drain(listener): e.g. flip the gRPC health service to NOT_SERVING when draining starts.
- Health probes are logged at DEBUG (every other request gets an INFO access line).
- http_telemetry.HttpTelemetryMiddleware (added by create_service_app when INSTRUMENTATION=on) makes
  the HTTP server span, `http.server.request.duration` and the access line, in place of
  OpenTelemetry's ASGI/FastAPI instrumentation (which cost a third of a cheap endpoint's throughput);
  FastAPI's own telemetry is turned off. configure_telemetry(settings, app) points such an app at
  the new providers.
"""
