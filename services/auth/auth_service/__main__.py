"""`python -m auth_service`: serve the auth API on PORT (graceful drain on SIGTERM via servicekit)."""

from servicekit.server import run

from .app import create_app
from .settings import AuthSettings


def main() -> None:
    settings = AuthSettings()
    run(create_app(settings), settings)


if __name__ == "__main__":
    main()
