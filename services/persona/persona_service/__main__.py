"""`python -m persona_service`: HTTP on PORT and gRPC on GRPC_PORT in one process."""

from servicekit.server import run

from .app import create_app
from .settings import PersonaSettings


def main() -> None:
    settings = PersonaSettings()
    app = create_app(settings)
    run(app, settings, grpc_server_factory=app.state.grpc_server_factory)


if __name__ == "__main__":
    main()
