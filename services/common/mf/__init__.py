"""Generated gRPC stubs for the services (see services/proto/README.md)."""
