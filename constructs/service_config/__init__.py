from .service_config import ServiceConfigParameters, config_path

__all__ = ["ServiceConfigParameters", "config_path"]
