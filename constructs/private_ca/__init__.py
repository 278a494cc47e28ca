from .private_ca import PrivateCertificateAuthority

__all__ = ["PrivateCertificateAuthority"]
