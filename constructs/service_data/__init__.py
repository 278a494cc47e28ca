from .replica_key import ReplicaKey
from .service_data import PREVIOUS_KEY_RETENTION, ServiceData, TableIndex
from .signing_key_rotation import SigningKeyRotation

__all__ = ["PREVIOUS_KEY_RETENTION", "ReplicaKey", "ServiceData", "SigningKeyRotation", "TableIndex"]
