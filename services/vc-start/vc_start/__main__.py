"""`python -m vc_start`: the HTTP API."""

from servicekit.server import run

from vc_start.app import create_app
from vc_start.settings import VcStartSettings


def main() -> None:
    settings = VcStartSettings()
    run(create_app(settings), settings)


if __name__ == "__main__":
    main()
